import COpenSSL
import Foundation

// Threads: any (a key is used by one thread at a time: the audit writer, or a CLI command).

/// An Ed25519 key of the audit's checkpoints, through OpenSSL's EVP API. Owns one `EVP_PKEY`
/// (freed in `deinit`). The fingerprint is the lower-case hex SHA-256 of the public key's DER
/// SubjectPublicKeyInfo: `openssl pkey -pubin -in audit-signing.pub.pem -outform DER | sha256sum`.
package final class AuditSigningKey: @unchecked Sendable {
    private let pkey: OpaquePointer
    package let isPrivate: Bool
    package let fingerprint: String

    private init(pkey: OpaquePointer, isPrivate: Bool) throws(CheckpointError) {
        self.pkey = pkey
        self.isPrivate = isPrivate
        guard EVP_PKEY_get_id(pkey) == EVP_PKEY_ED25519 else {
            EVP_PKEY_free(pkey)
            throw CheckpointError("not an Ed25519 key")
        }
        var der: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_PUBKEY(pkey, &der)
        guard length > 0, let der else {
            EVP_PKEY_free(pkey)
            throw CheckpointError("cannot encode the public key")
        }
        fingerprint = SHA256.hex(bytes: UnsafeBufferPointer(start: der, count: Int(length)))
        CRYPTO_free(der, #fileID, #line)
    }

    deinit { EVP_PKEY_free(pkey) }

    /// A new key pair.
    package static func generate() throws(CheckpointError) -> AuditSigningKey {
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nil) else { throw CheckpointError("EVP_PKEY_CTX_new_id failed") }
        defer { EVP_PKEY_CTX_free(ctx) }
        var made: OpaquePointer? = nil
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_keygen(ctx, &made) == 1, let made else {
            throw CheckpointError("Ed25519 key generation failed")
        }
        return try AuditSigningKey(pkey: made, isPrivate: true)
    }

    /// A PEM file: a private key (PKCS #8), or a public key when `publicOnly`.
    package static func load(path: String, publicOnly: Bool) throws(CheckpointError) -> AuditSigningKey {
        guard let bio = BIO_new_file(path, "r") else { throw CheckpointError("\(path): cannot read") }
        defer { BIO_free(bio) }
        let pkey = publicOnly ? PEM_read_bio_PUBKEY(bio, nil, nil, nil) : PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        guard let pkey else {
            ERR_clear_error()
            throw CheckpointError("\(path): not a PEM \(publicOnly ? "public" : "private") key")
        }
        do { return try AuditSigningKey(pkey: pkey, isPrivate: !publicOnly) } catch { throw CheckpointError("\(path): \(error)") }
    }

    /// The private key as PKCS #8 PEM, and the public key as PEM.
    package func pem() throws(CheckpointError) -> (privateKey: String, publicKey: String) {
        func write(_ body: (OpaquePointer) -> Int32) throws(CheckpointError) -> String {
            guard let bio = BIO_new(BIO_s_mem()) else { throw CheckpointError("BIO_new failed") }
            defer { BIO_free(bio) }
            guard body(bio) == 1 else { throw CheckpointError("PEM encoding failed") }
            var data: UnsafeMutablePointer<CChar>? = nil
            let n = hg_BIO_get_mem_data(bio, &data)
            guard let data, n > 0 else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self)
        }
        let privateKey = isPrivate ? try write { PEM_write_bio_PrivateKey($0, pkey, nil, nil, 0, nil, nil) } : ""
        let publicKey = try write { PEM_write_bio_PUBKEY($0, pkey) }
        return (privateKey, publicKey)
    }

    package func sign(_ message: [UInt8]) throws(CheckpointError) -> [UInt8] {
        guard isPrivate else { throw CheckpointError("a public key cannot sign") }
        guard let ctx = EVP_MD_CTX_new() else { throw CheckpointError("EVP_MD_CTX_new failed") }
        defer { EVP_MD_CTX_free(ctx) }
        var signature = [UInt8](repeating: 0, count: 64)
        var length = 64
        let ok = EVP_DigestSignInit(ctx, nil, nil, nil, pkey) == 1
            && EVP_DigestSign(ctx, &signature, &length, message, message.count) == 1
        guard ok, length == 64 else { throw CheckpointError("Ed25519 signing failed") }
        return signature
    }

    package func verify(_ message: [UInt8], signature: [UInt8]) -> Bool {
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestVerifyInit(ctx, nil, nil, nil, pkey) == 1 else { return false }
        let ok = EVP_DigestVerify(ctx, signature, signature.count, message, message.count) == 1
        ERR_clear_error()
        return ok
    }
}

package struct CheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    package var description: String
    package init(_ description: String) { self.description = description }
}

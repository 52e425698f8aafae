import COpenSSL
import Foundation
import Hookgate

/// Throwaway certificates for the simulator, demos and tests: a CA and a server
/// certificate signed by it (ECDSA P-256, SHA-256), valid from an hour ago for `validHours`.
/// Never for production: the keys live in files next to the certificates.
public enum Certificates {
    public struct Files: Sendable {
        public var caCert: String
        public var cert: String
        public var key: String
    }

    /// Writes `ca.pem`, `cert.pem`, `key.pem` into `directory`; `names` are the server's
    /// subjectAltNames (host names and IP addresses).
    public static func makeTestPKI(directory: String, names: [String] = ["localhost", "127.0.0.1"],
                                   validHours: Int = 24) throws -> Files {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let caKey = try Key()
        let ca = try Cert(subject: "Hookgate throwaway CA", issuer: nil, issuerKey: caKey, publicKey: caKey,
                          extensions: [(NID_basic_constraints, "critical,CA:TRUE"),
                                       (NID_key_usage, "critical,keyCertSign,cRLSign"),
                                       (NID_subject_key_identifier, "hash")],
                          validHours: validHours)
        let leafKey = try Key()
        let san = names.map { HostName.isIPLiteral($0) ? "IP:\($0)" : "DNS:\($0)" }.joined(separator: ",")
        let leaf = try Cert(subject: names.first ?? "localhost", issuer: ca, issuerKey: caKey, publicKey: leafKey,
                            extensions: [(NID_basic_constraints, "critical,CA:FALSE"),
                                         (NID_key_usage, "critical,digitalSignature"),
                                         (NID_ext_key_usage, "serverAuth"),
                                         (NID_subject_alt_name, san),
                                         (NID_authority_key_identifier, "keyid")],
                            validHours: validHours)
        let files = Files(caCert: directory + "/ca.pem", cert: directory + "/cert.pem", key: directory + "/key.pem")
        try write(ca.pem(), to: files.caCert, mode: 0o644)
        try write(leaf.pem(), to: files.cert, mode: 0o644)
        try write(leafKey.pem(), to: files.key, mode: 0o600)
        return files
    }

    private static func write(_ text: String, to path: String, mode: Int) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8),
                                             attributes: [.posixPermissions: mode]) else {
            throw TLSError(plain: "cannot write \(path)")
        }
    }

    /// Owns one EVP_PKEY.
    private final class Key {
        let pkey: OpaquePointer
        init() throws {
            guard let k = hg_EVP_EC_gen_prime256v1() else { throw TLSError("EC key generation") }
            pkey = k
        }
        deinit { EVP_PKEY_free(pkey) }
        func pem() throws -> String {
            try withMemoryBIO { PEM_write_bio_PrivateKey($0, pkey, nil, nil, 0, nil, nil) }
        }
    }

    /// Owns one X509.
    private final class Cert {
        let x509: OpaquePointer
        init(subject: String, issuer: Cert?, issuerKey: Key, publicKey: Key,
             extensions: [(Int32, String)], validHours: Int) throws {
            guard let x = X509_new() else { throw TLSError("X509_new") }
            x509 = x
            X509_set_version(x, 2)
            var serial = SecureRandom.bytes(8)
            serial[0] &= 0x7f
            let serialValue = serial.reduce(0) { ($0 << 8) | Int($1) }
            ASN1_INTEGER_set(X509_get_serialNumber(x), serialValue)
            X509_gmtime_adj(X509_getm_notBefore(x), -3600)
            X509_gmtime_adj(X509_getm_notAfter(x), validHours * 3600)
            let name = X509_get_subject_name(x)
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, subject, -1, -1, 0)
            X509_set_issuer_name(x, issuer.map { X509_get_subject_name($0.x509) } ?? name)
            X509_set_pubkey(x, publicKey.pkey)
            var ctx = X509V3_CTX()
            X509V3_set_ctx(&ctx, issuer?.x509 ?? x, x, nil, nil, 0)
            for (nid, value) in extensions {
                guard let ext = X509V3_EXT_conf_nid(nil, &ctx, nid, value) else {
                    throw TLSError("certificate extension \(value)")
                }
                X509_add_ext(x, ext, -1)
                X509_EXTENSION_free(ext)
            }
            guard X509_sign(x, issuerKey.pkey, EVP_sha256()) > 0 else { throw TLSError("X509_sign") }
        }
        deinit { X509_free(x509) }
        func pem() throws -> String { try withMemoryBIO { PEM_write_bio_X509($0, x509) } }
    }

    private static func withMemoryBIO(_ write: (OpaquePointer) -> Int32) throws -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw TLSError("BIO_new") }
        defer { BIO_free(bio) }
        guard write(bio) == 1 else { throw TLSError("PEM write") }
        var data: UnsafeMutablePointer<CChar>? = nil
        let n = hg_BIO_get_mem_data(bio, &data)
        guard let data, n > 0 else { throw TLSError("PEM read-back") }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self)
    }
}

import COpenSSL

// Threads: contexts are made at start or on the reload thread; SSL objects are made and used on the loop.

/// A TLS failure with OpenSSL's own words (error queue or verify result).
public struct TLSError: Error, CustomStringConvertible, Sendable {
    public var description: String
    package init(_ what: String) { description = "\(what): \(TLSError.drainQueue())" }
    package init(plain: String) { description = plain }

    /// Pops OpenSSL's thread-local error queue into one line.
    static func drainQueue() -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, buf.count)
            parts.append(String(decoding: buf.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self))
        }
        return parts.isEmpty ? "unknown OpenSSL error" : parts.joined(separator: "; ")
    }
}

/// The client side: an `SSL_CTX` that always verifies the peer's chain and host name.
/// There is deliberately no switch to turn verification off.
///
/// Ownership: owns one `SSL_CTX` (freed in deinit). Each `SSL` made by `makeSSL` holds its
/// own reference to the context (SSL_new up-refs it), so connections may outlive this object.
final class TLSClientContext {
    private let ctx: OpaquePointer

    /// `caFile` nil: the system trust store.
    init(caFile: String?) throws {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSError("SSL_CTX_new") }
        self.ctx = ctx
        _ = hg_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        if let caFile {
            guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1 else {
                throw TLSError("cannot load CA file \(caFile)")
            }
        } else {
            guard SSL_CTX_set_default_verify_paths(ctx) == 1 else { throw TLSError("cannot load the system trust store") }
        }
    }

    deinit { SSL_CTX_free(ctx) }

    /// A new `SSL` for one connection to `host`: SNI (not for IP literals, RFC 6066) and
    /// host-name (or IP) verification. The caller owns it (hands it to a bufferevent that
    /// frees it on close).
    func makeSSL(host: String) throws -> OpaquePointer {
        ERR_clear_error()
        guard let ssl = SSL_new(ctx) else { throw TLSError("SSL_new") }
        guard SSL_set1_host(ssl, host) == 1 else {
            SSL_free(ssl)
            throw TLSError("SSL_set1_host")
        }
        if !HostName.isIPLiteral(host) {
            _ = hg_SSL_set_tlsext_host_name(ssl, host)
        }
        return ssl
    }

    /// Why verification failed on `ssl`, in OpenSSL's words, or nil if it did not.
    static func verifyFailure(_ ssl: OpaquePointer) -> String? {
        let result = SSL_get_verify_result(ssl)
        guard result != Int(X509_V_OK) else { return nil }
        return String(cString: X509_verify_cert_error_string(result))
    }
}

/// The server side: certificate chain and key from PEM files, TLS 1.2+, no compression,
/// server cipher preference. Configured entirely in `init` and never changed after, so it may
/// be made on one thread (a reload's) and used on another (the loop's `SSL_new`), as OpenSSL
/// allows for an `SSL_CTX` that is no longer being set up.
package final class TLSServerContext: @unchecked Sendable {
    let ctx: OpaquePointer

    package init(certFile: String, keyFile: String) throws {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError("SSL_CTX_new") }
        self.ctx = ctx
        _ = hg_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
        _ = hg_SSL_CTX_set_server_options(ctx)
        guard SSL_CTX_use_certificate_chain_file(ctx, certFile) == 1 else {
            throw TLSError("cannot load certificate \(certFile)")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, keyFile, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError("cannot load private key \(keyFile)")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError("private key \(keyFile) does not match certificate \(certFile)")
        }
    }

    deinit { SSL_CTX_free(ctx) }

    /// A new server-side `SSL`; the caller owns it.
    func makeSSL() -> OpaquePointer? { SSL_new(ctx) }
}

package enum HostName {
    package static func isIPLiteral(_ host: String) -> Bool {
        if host.contains(":") { return true }  // IPv6
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isNumber) }
    }
}

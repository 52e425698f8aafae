import Foundation

// Threads: any (values).

/// An `https://host[:port][/path]` URL, parsed strictly: no user information, no query,
/// no fragment. Upstream TLS is always verified, so only `https` is accepted.
public struct HTTPSURL: Sendable, Equatable {
    /// Lower-case host name, IPv4 address, or IPv6 address without brackets.
    public var host: String
    /// The port given in the URL, or 443.
    public var port: Int
    /// Whether the URL named its port.
    public var hasExplicitPort: Bool
    /// The path, "/" when the URL has none.
    public var path: String

    /// Whether `host` is an IP address (no SNI is sent for those).
    public var hostIsIPAddress: Bool { Self.isIPv4(host) || Self.isIPv6(host) }

    /// `https://host[:port]`, IPv6 addresses in brackets; the port only when the URL named one.
    public var origin: String {
        let h = Self.isIPv6(host) ? "[\(host)]" : host
        return hasExplicitPort ? "https://\(h):\(port)" : "https://\(h)"
    }

    public enum Form: Sendable {
        /// An origin: the path must be empty or "/".
        case origin
        /// Any absolute path is allowed.
        case withPath
    }

    /// Parses `text`, or returns why it is not acceptable (a message for a `ConfigProblem`).
    public static func parse(_ text: String, form: Form) -> Result<HTTPSURL, Message> {
        let scheme = "https://"
        guard text.count > scheme.count, text.prefix(scheme.count).lowercased() == scheme else {
            if text.lowercased().hasPrefix("http://") {
                return .failure(Message("must use https (upstream TLS is always verified)"))
            }
            return .failure(Message("must be an https:// URL"))
        }
        let rest = text.dropFirst(scheme.count)
        if rest.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7f } ?? false }) {
            return .failure(Message("must not contain white space or control characters"))
        }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let tail = rest[authorityEnd...]
        if authority.contains("@") {
            return .failure(Message("must not contain user information (user:password@)"))
        }
        if tail.contains("#") { return .failure(Message("must not have a fragment")) }
        if tail.contains("?") { return .failure(Message("must not have a query string")) }
        let path = tail.isEmpty ? "/" : String(tail)
        if case .origin = form, path != "/" {
            return .failure(Message("must not have a path (only https://host[:port])"))
        }

        // Host and optional port.
        var host: String
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                return .failure(Message("has an unterminated IPv6 address"))
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            guard isIPv6(host) else { return .failure(Message("has an invalid IPv6 address")) }
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return .failure(Message("has an invalid host")) }
                portText = after.dropFirst()
            }
        } else {
            if let colon = authority.firstIndex(of: ":") {
                host = String(authority[..<colon])
                portText = authority[authority.index(after: colon)...]
            } else {
                host = String(authority)
            }
            guard !host.isEmpty else { return .failure(Message("has no host")) }
            guard isHostName(host) else { return .failure(Message("has an invalid host name \"\(host)\"")) }
        }
        host = host.lowercased()
        var port = 443
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let p = Int(portText), (1...65535).contains(p)
            else { return .failure(Message("has an invalid port (must be 1 to 65535)")) }
            port = p
        }
        return .success(HTTPSURL(host: host, port: port, hasExplicitPort: portText != nil, path: path))
    }

    /// A validation message (a `String` that is also an `Error`, so it fits `Result`).
    public struct Message: Error, Sendable, Equatable, CustomStringConvertible {
        public var text: String
        public init(_ text: String) { self.text = text }
        public var description: String { text }
    }

    /// A DNS name (LDH labels) or dotted IPv4 address.
    static func isHostName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        for label in s.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.utf8.count <= 63, label.first != "-", label.last != "-",
                  label.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") })
            else { return false }
        }
        return true
    }

    static func isIPv4(_ s: String) -> Bool {
        var addr = in_addr()
        return s.withCString { inet_pton(AF_INET, $0, &addr) } == 1
    }

    static func isIPv6(_ s: String) -> Bool {
        var addr = in6_addr()
        return s.withCString { inet_pton(AF_INET6, $0, &addr) } == 1
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }
}

import Foundation

// Threads: any (Sendable values; parsed at start and on the reload thread).

/// `audit.ship`: every committed record copied into PostgreSQL by a thread of its own
/// (docs/audit.md, "The central database").
public struct AuditShipConfig: Sendable, Equatable {
    /// A libpq connection URI without a password (`postgresql://user@host:port/db?...`).
    public var postgres: String
    /// The password, when the server asks for one; never inline.
    public var password: SecretSource?
    /// This replica's name in the central tables; unique per replica (default: the host name).
    public var replica: String

    public init(postgres: String, password: SecretSource? = nil, replica: String) {
        self.postgres = postgres
        self.password = password
        self.replica = replica
    }

    /// Letters, digits, `.`, `_`, `-`; 1 to 64.
    package static func isReplicaName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d
        }
    }

    /// Why `uri` is not a password-free PostgreSQL URI, or nil.
    package static func uriProblem(_ uri: String) -> String? {
        guard uri.hasPrefix("postgresql://") || uri.hasPrefix("postgres://") else {
            return "must be a postgresql:// URI"
        }
        let rest = uri.drop { $0 != "/" }.dropFirst(2)
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        if let at = authority.lastIndex(of: "@"), authority[..<at].contains(":") {
            return "must not hold a password: use \"password\": {\"env\": NAME} or {\"file\": PATH}"
        }
        if uri.contains("password=") {
            return "must not hold a password: use \"password\": {\"env\": NAME} or {\"file\": PATH}"
        }
        return nil
    }

    /// The host name, as a replica name (characters outside the allowed set become `-`).
    static var defaultReplica: String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "hookgate"
        let cleaned = String(host.map { isReplicaName(String($0)) ? $0 : "-" }.prefix(64))
        return cleaned.isEmpty ? "hookgate" : cleaned
    }
}

extension ConfigValidator {
    func auditShip(_ o: inout ObjectReader) -> AuditShipConfig? {
        var uri: String?
        if let text = string(&o, "postgres") {
            if let problem = AuditShipConfig.uriProblem(text) { report(o.path(of: "postgres"), problem) } else { uri = text }
        }
        var password: SecretSource?? = .some(nil)
        if o.has("password") {
            let path = o.path(of: "password")
            password = secret(o.take("password"), path: path).map { .some($0) }
        }
        var replica: String? = AuditShipConfig.defaultReplica
        if o.has("replica") {
            replica = string(&o, "replica")
            if let name = replica, !AuditShipConfig.isReplicaName(name) {
                report(o.path(of: "replica"), "must be 1 to 64 characters from A-Z a-z 0-9 . _ -")
                replica = nil
            }
        }
        guard let uri, let password, let replica else { return nil }
        return AuditShipConfig(postgres: uri, password: password, replica: replica)
    }
}

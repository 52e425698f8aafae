import Foundation

// Threads: any; runs at start and on the reload thread, never on the loop.

extension GatewayConfig {
    /// Decodes and validates a configuration file's bytes.
    ///
    /// Every problem is collected (with its JSON path) before throwing, so one run of
    /// `hookgate check-config` names them all. Secrets are never read: an `{"env": NAME}`
    /// variable need not be set and a `{"file": PATH}` token or secret is not opened.
    /// - Parameter checkFiles: when true, `upstream.ca_file`, `listen.tls.cert_file` and
    ///   `listen.tls.key_file` must name existing, readable files (relative paths are
    ///   relative to the working directory). `audit.path` need never exist.
    public static func parse(_ bytes: [UInt8], checkFiles: Bool = true) throws(ConfigError) -> GatewayConfig {
        let tree: JSONTree
        do {
            tree = try JSONTree.parse(bytes)
        } catch {
            throw ConfigError(problems: [ConfigProblem(path: "(file)", message: "not valid JSON (\(jsonErrorSummary(error)))")])
        }
        let validator = ConfigValidator(checkFiles: checkFiles)
        let config = validator.config(tree, version: SHA256.hex(bytes: bytes))
        guard validator.problems.isEmpty, let config else {
            let problems = validator.problems.isEmpty
                ? [ConfigProblem(path: "(file)", message: "invalid configuration")] : validator.problems
            throw ConfigError(problems: problems)
        }
        return config
    }

    /// Reads and validates the file at `path` (see `parse(_:checkFiles:)`, with `checkFiles`).
    /// A file that cannot be read is a problem at path `(file)`.
    public static func load(path: String, checkFiles: Bool = true) throws(ConfigError) -> GatewayConfig {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigError(problems: [ConfigProblem(path: "(file)", message: "cannot read \(path): \(fileErrorSummary(path))")])
        }
        return try parse(Array(data), checkFiles: checkFiles)
    }

    private static func fileErrorSummary(_ path: String) -> String {
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) { return "no such file" }
        if isDirectory.boolValue { return "is a directory" }
        if !FileManager.default.isReadableFile(atPath: path) { return "permission denied" }
        return "read failed"
    }

    private static func jsonErrorSummary(_ error: any Error) -> String {
        let ns = error as NSError
        if let detail = ns.userInfo[NSDebugDescriptionErrorKey] as? String, !detail.isEmpty { return detail }
        return "syntax error"
    }
}

/// Bounds of the numeric settings (documented in docs/configuration.md).
enum ConfigBounds {
    static let port = 1...65535
    static let listenPort = 0...65535
    static let connectTimeoutMs = 1...60_000
    static let upstreamTimeoutMs = 1...600_000
    static let upstreamMaxConnections = 1...4096
    static let upstreamQueueTimeoutMs = 1...600_000
    static let upstreamMaxQueue = 1...1_000_000
    static let upstreamIdleTimeoutMs = 1000...3_600_000
    static let upstreamMaxResponseBytes = 1024...67_108_864
    static let auditMaxBodyBytes = 0...16_777_216
    static let auditMaxQueue = 1...1_000_000
    static let refreshAtPercent = 10...95
    static let drainTimeoutMs = 0...3_600_000
    static let lingerMs = 0...60_000
    static let tokenRetryMaxMs = 100...300_000
    static let expiryMarginMs = 0...600_000
    static let auditBusyTimeoutMs = 0...60_000
    static let maxHeaderBytes = 1024...1_048_576
    static let maxBodyBytes = 1...67_108_864
    static let clientTimeoutMs = 1...600_000
    static let maxConnections = 1...1_000_000
    static let requestsPerMinute = 1...6_000_000
    static let burst = 1...1_000_000
    static let teamNameLength = 1...64
    static let redisTimeoutMs = 1...10_000
    static let checkpointIntervalS = 1...86_400
    /// `audit.rotate.max_bytes`: one page to 1 TiB (a new file's tables take about 80 KiB: below
    /// that, every commit group rotates; allowed, for tests and demonstrations).
    static let rotateMaxBytes = 4096...(1 << 40)
}

/// Walks the JSON tree of a configuration, collecting problems as it goes.
/// Each section returns its value, or nil when something required of it is wrong.
final class ConfigValidator {
    private(set) var problems: [ConfigProblem] = []
    private let checkFiles: Bool

    init(checkFiles: Bool) { self.checkFiles = checkFiles }

    func report(_ path: String, _ message: String) {
        problems.append(ConfigProblem(path: path, message: message))
    }

    // MARK: - Whole file

    func config(_ tree: JSONTree, version: String) -> GatewayConfig? {
        guard case .object(let members) = tree else {
            report("(file)", "must contain a JSON object, not \(tree.kind)")
            return nil
        }
        var root = ObjectReader(members, path: "")
        let listen = section(&root, "listen", optional: ListenConfig()) { listenConfig(&$0) }
        let admin = section(&root, "admin", optional: AdminConfig()) { adminConfig(&$0) }
        let upstream = section(&root, "upstream") { upstreamConfig(&$0) }
        let audit = section(&root, "audit") { auditConfig(&$0) }
        let limits = section(&root, "limits", optional: LimitsConfig()) { limitsConfig(&$0) }
        let global = optionalSection(&root, "global_rate_limit") { rateLimit(&$0) }
        let shared = optionalSection(&root, "shared_limits") { sharedLimits(&$0) }
        let teams = teamList(root.take("teams"), path: root.path(of: "teams"))
        finish(root)

        if let listen, let admin, listen.port != 0, listen.port == admin.port {
            report("admin.port", "must differ from listen.port (\(listen.port))")
        }
        guard let listen, let admin, let upstream, let audit, let limits, let global, let shared, let teams else { return nil }
        return GatewayConfig(listen: listen, admin: admin, upstream: upstream, audit: audit, limits: limits,
                             globalRateLimit: global.value, sharedLimits: shared.value, teams: teams, version: version)
    }

    /// A required object member.
    func section<T>(_ parent: inout ObjectReader, _ key: String,
                            _ read: (inout ObjectReader) -> T?) -> T? {
        let path = parent.path(of: key)
        guard let value = parent.take(key) else {
            report(path, "is required")
            return nil
        }
        guard var reader = objectReader(value, path: path) else { return nil }
        let result = read(&reader)
        finish(reader)
        return result
    }

    /// An object member with a default when absent.
    func section<T>(_ parent: inout ObjectReader, _ key: String, optional fallback: T,
                            _ read: (inout ObjectReader) -> T?) -> T? {
        guard parent.has(key) else {
            _ = parent.take(key)
            return fallback
        }
        return section(&parent, key, read)
    }

    /// An object member whose absence means "none". The outer optional is nil on error.
    func optionalSection<T>(_ parent: inout ObjectReader, _ key: String,
                                    _ read: (inout ObjectReader) -> T?) -> Present<T>? {
        guard parent.has(key) else {
            _ = parent.take(key)
            return Present(value: nil)
        }
        guard let value = section(&parent, key, read) else { return nil }
        return Present(value: value)
    }

    /// Wraps an optional result so that "validly absent" differs from "invalid".
    struct Present<T> { var value: T? }

    func objectReader(_ value: JSONTree, path: String) -> ObjectReader? {
        guard case .object(let members) = value else {
            report(path, "must be an object, not \(value.kind)")
            return nil
        }
        return ObjectReader(members, path: path)
    }

    func finish(_ reader: ObjectReader) {
        for key in reader.unreadKeys { report(reader.path(of: key), "unknown key") }
    }

    // MARK: - Scalars

    func string(_ o: inout ObjectReader, _ key: String, default fallback: String? = nil) -> String? {
        let path = o.path(of: key)
        guard let value = o.take(key) else {
            if fallback == nil { report(path, "is required") }
            return fallback
        }
        guard case .string(let s) = value else {
            report(path, "must be a string, not \(value.kind)")
            return nil
        }
        guard !s.isEmpty else {
            report(path, "must not be empty")
            return nil
        }
        guard !s.utf8.contains(0) else {
            report(path, "must not contain a NUL character")
            return nil
        }
        return s
    }

    func integer(_ o: inout ObjectReader, _ key: String, default fallback: Int? = nil,
                         range: ClosedRange<Int>) -> Int? {
        let path = o.path(of: key)
        guard let value = o.take(key) else {
            if fallback == nil { report(path, "is required") }
            return fallback
        }
        let n: Int
        switch value {
        case .integer(let i): n = i
        case .fraction(let d) where d.isFinite && d.rounded() == d:
            // Integral but beyond exact integer range.
            report(path, d < 0 ? "must be at least \(range.lowerBound)" : "must be at most \(range.upperBound)")
            return nil
        case .fraction: report(path, "must be a whole number"); return nil
        default: report(path, "must be a number, not \(value.kind)"); return nil
        }
        if n < range.lowerBound { report(path, "must be at least \(range.lowerBound)"); return nil }
        if n > range.upperBound { report(path, "must be at most \(range.upperBound)"); return nil }
        return n
    }

    func boolean(_ o: inout ObjectReader, _ key: String, default fallback: Bool) -> Bool? {
        guard let value = o.take(key) else { return fallback }
        guard case .bool(let b) = value else {
            report(o.path(of: key), "must be true or false, not \(value.kind)")
            return nil
        }
        return b
    }

    private func address(_ o: inout ObjectReader, _ key: String, default fallback: String) -> String? {
        guard let s = string(&o, key, default: fallback) else { return nil }
        guard HTTPSURL.isIPv4(s) || HTTPSURL.isIPv6(s) || HTTPSURL.isHostName(s) else {
            report(o.path(of: key), "must be an IP address or a host name")
            return nil
        }
        return s
    }

    /// A file the gateway reads at start-up (certificates, keys, CA bundles): never a secret source.
    private func readableFile(_ o: inout ObjectReader, _ key: String, required: Bool) -> String?? {
        let path = o.path(of: key)
        if !required, !o.has(key) {
            _ = o.take(key)
            return .some(nil)
        }
        guard let file = string(&o, key) else { return nil }
        if checkFiles {
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) {
                report(path, "no such file: \(file)")
                return nil
            }
            if isDirectory.boolValue {
                report(path, "is a directory, not a file: \(file)")
                return nil
            }
            if !FileManager.default.isReadableFile(atPath: file) {
                report(path, "file is not readable: \(file)")
                return nil
            }
        }
        return .some(file)
    }

    // MARK: - Sections

    private func listenConfig(_ o: inout ObjectReader) -> ListenConfig? {
        let address = address(&o, "address", default: "0.0.0.0")
        let port = integer(&o, "port", default: 8080, range: ConfigBounds.listenPort)
        let reusePort = boolean(&o, "reuse_port", default: false)
        let tls = optionalSection(&o, "tls") { t -> TLSFiles? in
            let cert = readableFile(&t, "cert_file", required: true)
            let key = readableFile(&t, "key_file", required: true)
            guard let cert = cert ?? nil, let key = key ?? nil else { return nil }
            return TLSFiles(certFile: cert, keyFile: key)
        }
        guard let address, let port, let reusePort, let tls else { return nil }
        return ListenConfig(address: address, port: port, tls: tls.value, reusePort: reusePort)
    }

    private func adminConfig(_ o: inout ObjectReader) -> AdminConfig? {
        let address = address(&o, "address", default: "127.0.0.1")
        let port = integer(&o, "port", default: 9090, range: ConfigBounds.listenPort)
        guard let address, let port else { return nil }
        return AdminConfig(address: address, port: port)
    }

    private func upstreamConfig(_ o: inout ObjectReader) -> UpstreamConfig? {
        var url: HTTPSURL?
        if let text = string(&o, "base_url") {
            switch HTTPSURL.parse(text, form: .origin) {
            case .success(let u): url = u
            case .failure(let m): report(o.path(of: "base_url"), m.text)
            }
        }
        let caFile = readableFile(&o, "ca_file", required: false)
        let d = UpstreamDefaults.self
        let connectTimeout = integer(&o, "connect_timeout_ms", default: d.connectTimeoutMs, range: ConfigBounds.connectTimeoutMs)
        let timeout = integer(&o, "timeout_ms", default: d.timeoutMs, range: ConfigBounds.upstreamTimeoutMs)
        let maxConnections = integer(&o, "max_connections", default: d.maxConnections, range: ConfigBounds.upstreamMaxConnections)
        let queueTimeout = integer(&o, "queue_timeout_ms", default: d.queueTimeoutMs, range: ConfigBounds.upstreamQueueTimeoutMs)
        let maxQueue = integer(&o, "max_queue", default: d.maxQueue, range: ConfigBounds.upstreamMaxQueue)
        let idleTimeout = integer(&o, "idle_timeout_ms", default: d.idleTimeoutMs, range: ConfigBounds.upstreamIdleTimeoutMs)
        let maxResponse = integer(&o, "max_response_bytes", default: d.maxResponseBytes, range: ConfigBounds.upstreamMaxResponseBytes)
        let token = serviceToken(o.take("service_token"), path: o.path(of: "service_token"))
        guard let url, let caFile, let connectTimeout, let timeout, let maxConnections, let queueTimeout, let maxQueue,
              let idleTimeout, let maxResponse, let token else { return nil }
        return UpstreamConfig(baseURL: url.origin, host: url.host, port: url.port, caFile: caFile,
                              connectTimeoutMs: connectTimeout, timeoutMs: timeout,
                              maxConnections: maxConnections, queueTimeoutMs: queueTimeout, maxQueue: maxQueue,
                              idleTimeoutMs: idleTimeout, maxResponseBytes: maxResponse, serviceToken: token)
    }

    private func auditConfig(_ o: inout ObjectReader) -> AuditConfig? {
        let path = string(&o, "path")
        let maxBody = integer(&o, "max_body_bytes", default: 65536, range: ConfigBounds.auditMaxBodyBytes)
        var durability: Durability? = .full
        if let word = string(&o, "durability", default: Durability.full.rawValue) {
            durability = Durability(rawValue: word)
            if durability == nil { report(o.path(of: "durability"), "must be \"full\" or \"normal\"") }
        } else {
            durability = nil
        }
        let maxQueue = integer(&o, "max_queue", default: 10_000, range: ConfigBounds.auditMaxQueue)
        let busyTimeout = integer(&o, "busy_timeout_ms", default: 1000, range: ConfigBounds.auditBusyTimeoutMs)
        let ship = optionalSection(&o, "ship") { auditShip(&$0) }
        var signingKey: String?? = .some(nil)
        if o.has("signing_key") {
            let keyPath = o.path(of: "signing_key")
            switch o.take("signing_key") {
            case .object(let members) where members.count == 1:
                var k = ObjectReader(members, path: keyPath)
                signingKey = string(&k, "file").map { .some($0) }
                finish(k)
            case .some(.string):
                report(keyPath, "an inline key is not allowed, use {\"file\": PATH}")
                signingKey = nil
            default:
                report(keyPath, "must be {\"file\": PATH} (a PEM Ed25519 private key from hookgate keygen --audit-signing-key)")
                signingKey = nil
            }
        }
        let interval = integer(&o, "checkpoint_interval_s", default: 60, range: ConfigBounds.checkpointIntervalS)
        var checkpointLog: String?? = .some(nil)
        if o.has("checkpoint_log") { checkpointLog = string(&o, "checkpoint_log").map { .some($0) } }
        let rotate = optionalSection(&o, "rotate") { auditRotate(&$0) }
        guard let path, let maxBody, let durability, let maxQueue, let busyTimeout, let ship, let signingKey, let interval,
              let checkpointLog, let rotate else { return nil }
        return AuditConfig(path: path, maxBodyBytes: maxBody, durability: durability, maxQueue: maxQueue,
                           busyTimeoutMs: busyTimeout, ship: ship.value, signingKey: signingKey,
                           checkpointIntervalS: interval, checkpointLog: checkpointLog, rotate: rotate.value)
    }

    /// `audit.rotate`: `{"max_bytes": N}` and/or `{"daily": true}`.
    private func auditRotate(_ o: inout ObjectReader) -> AuditRotation? {
        let hasMax = o.has("max_bytes"), hasDaily = o.has("daily")
        let maxBytes = hasMax ? integer(&o, "max_bytes", range: ConfigBounds.rotateMaxBytes) : nil
        let daily = boolean(&o, "daily", default: false)
        guard !hasMax || maxBytes != nil, let daily else { return nil }
        guard maxBytes != nil || daily else {
            report(o.path, hasDaily ? "rotates never with \"daily\": false and no \"max_bytes\": set one, or remove the key"
                                    : "must name \"max_bytes\" (bytes) and/or \"daily\": true")
            return nil
        }
        return AuditRotation(maxBytes: maxBytes, daily: daily)
    }

    private func limitsConfig(_ o: inout ObjectReader) -> LimitsConfig? {
        let header = integer(&o, "max_header_bytes", default: 8192, range: ConfigBounds.maxHeaderBytes)
        let body = integer(&o, "max_body_bytes", default: 16384, range: ConfigBounds.maxBodyBytes)
        let timeout = integer(&o, "client_timeout_ms", default: 15000, range: ConfigBounds.clientTimeoutMs)
        let connections = integer(&o, "max_connections", default: 1024, range: ConfigBounds.maxConnections)
        let drain = integer(&o, "drain_timeout_ms", default: 30_000, range: ConfigBounds.drainTimeoutMs)
        let linger = integer(&o, "linger_ms", default: 2000, range: ConfigBounds.lingerMs)
        guard let header, let body, let timeout, let connections, let drain, let linger else { return nil }
        return LimitsConfig(maxHeaderBytes: header, maxBodyBytes: body, clientTimeoutMs: timeout, maxConnections: connections,
                            drainTimeoutMs: drain, lingerMs: linger)
    }

    func rateLimit(_ o: inout ObjectReader) -> RateLimitConfig? {
        let rpm = integer(&o, "requests_per_minute", range: ConfigBounds.requestsPerMinute)
        let burst = integer(&o, "burst", range: ConfigBounds.burst)
        guard let rpm, let burst else { return nil }
        return RateLimitConfig(requestsPerMinute: rpm, burst: burst)
    }
}

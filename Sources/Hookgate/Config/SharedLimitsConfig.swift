// Threads: any (Sendable values; parsed at start and on the reload thread).

/// `shared_limits`: team and global rate-limit buckets kept in Redis, shared by every replica
/// that names the same Redis and `key_prefix` (docs/configuration.md).
public struct SharedLimitsConfig: Sendable, Equatable {
    public var redis: RedisConfig
    public var onUnavailable: OnUnavailable

    /// What a call gets while Redis cannot answer within `timeout_ms`.
    public enum OnUnavailable: String, Sendable, Equatable, CaseIterable {
        /// Decided by this replica's own in-process buckets (same rates).
        case local
        /// 503 `limits_unavailable`; `/readyz` not ready.
        case refuse
    }

    public init(redis: RedisConfig, onUnavailable: OnUnavailable = .local) {
        self.redis = redis
        self.onUnavailable = onUnavailable
    }
}

public struct RedisConfig: Sendable, Equatable {
    public var address: RedisAddress
    /// Sent with `AUTH` on every new connection; never inline.
    public var password: SecretSource?
    /// How long a call waits for Redis's answer before `on_unavailable` applies.
    public var timeoutMs: Int
    /// Prefix of every key the gateway writes (`<prefix>team:<name>`, `<prefix>global`).
    public var keyPrefix: String

    public init(address: RedisAddress, password: SecretSource? = nil, timeoutMs: Int = 50, keyPrefix: String = "hookgate:") {
        self.address = address
        self.password = password
        self.timeoutMs = timeoutMs
        self.keyPrefix = keyPrefix
    }
}

public enum RedisAddress: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    /// `host:port`, `[v6]:port` or `unix:/absolute/path`; nil with the reason otherwise.
    static func parse(_ text: String) -> Result<RedisAddress, ConfigMessage> {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/") else { return .failure(ConfigMessage("must be unix:/absolute/path")) }
            guard path.utf8.count < 108 else { return .failure(ConfigMessage("the socket path must be shorter than 108 bytes")) }
            return .success(.unix(path: path))
        }
        let host: Substring, portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return .failure(ConfigMessage("must be host:port, [IPv6]:port or unix:/path"))
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                return .failure(ConfigMessage("must be host:port, [IPv6]:port or unix:/path"))
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        let h = String(host)
        guard HTTPSURL.isIPv4(h) || HTTPSURL.isIPv6(h) || HTTPSURL.isHostName(h) else {
            return .failure(ConfigMessage("has an invalid host \(h.debugDescription)"))
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            return .failure(ConfigMessage("has an invalid port (must be 1 to 65535)"))
        }
        return .success(.tcp(host: h, port: port))
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// A problem's text, for parsers that report through the validator.
struct ConfigMessage: Error, Equatable {
    var text: String
    init(_ text: String) { self.text = text }
}

extension ConfigValidator {
    func sharedLimits(_ o: inout ObjectReader) -> SharedLimitsConfig? {
        let redis = section(&o, "redis") { redisConfig(&$0) }
        var onUnavailable: SharedLimitsConfig.OnUnavailable? = .local
        if let text = string(&o, "on_unavailable", default: "local") {
            onUnavailable = SharedLimitsConfig.OnUnavailable(rawValue: text)
            if onUnavailable == nil { report(o.path(of: "on_unavailable"), "must be \"local\" or \"refuse\"") }
        } else {
            onUnavailable = nil
        }
        guard let redis, let onUnavailable else { return nil }
        return SharedLimitsConfig(redis: redis, onUnavailable: onUnavailable)
    }

    private func redisConfig(_ o: inout ObjectReader) -> RedisConfig? {
        var address: RedisAddress?
        if let text = string(&o, "address") {
            switch RedisAddress.parse(text) {
            case .success(let a): address = a
            case .failure(let m): report(o.path(of: "address"), m.text)
            }
        }
        var password: SecretSource?? = .some(nil)
        if o.has("password") {
            let path = o.path(of: "password")
            password = secret(o.take("password"), path: path).map { .some($0) }
        }
        let timeout = integer(&o, "timeout_ms", default: 50, range: ConfigBounds.redisTimeoutMs)
        var prefix: String?
        if let text = string(&o, "key_prefix", default: "hookgate:") {
            if text.utf8.count > 64 || !text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) {
                report(o.path(of: "key_prefix"), "must be 1 to 64 printable ASCII characters without spaces")
            } else {
                prefix = text
            }
        }
        guard let address, let password, let timeout, let prefix else { return nil }
        return RedisConfig(address: address, password: password, timeoutMs: timeout, keyPrefix: prefix)
    }
}

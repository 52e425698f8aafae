// Threads: any (Sendable values).

/// The whole configuration file, decoded and validated (see docs/configuration.md).
///
/// Build one with `GatewayConfig.parse(_:checkFiles:)` or `GatewayConfig.load(path:)`; both
/// collect every problem of the file, each with its JSON path, before giving up.
public struct GatewayConfig: Sendable, Equatable {
    public var listen: ListenConfig
    public var admin: AdminConfig
    public var upstream: UpstreamConfig
    public var audit: AuditConfig
    public var limits: LimitsConfig
    /// `nil`: no gateway-wide limit.
    public var globalRateLimit: RateLimitConfig?
    /// `nil`: limits are this process's own (the default).
    public var sharedLimits: SharedLimitsConfig?
    public var teams: [TeamConfig]
    /// `config_version`: lower-case hex SHA-256 of the file's exact bytes.
    public var version: String

    public init(listen: ListenConfig = ListenConfig(), admin: AdminConfig = AdminConfig(),
                upstream: UpstreamConfig, audit: AuditConfig, limits: LimitsConfig = LimitsConfig(),
                globalRateLimit: RateLimitConfig? = nil, sharedLimits: SharedLimitsConfig? = nil,
                teams: [TeamConfig] = [], version: String) {
        self.listen = listen
        self.admin = admin
        self.upstream = upstream
        self.audit = audit
        self.limits = limits
        self.globalRateLimit = globalRateLimit
        self.sharedLimits = sharedLimits
        self.teams = teams
        self.version = version
    }
}

/// The main (caller-facing) listener.
public struct ListenConfig: Sendable, Equatable {
    public var address: String
    /// 1...65535, or 0 to let the system pick a free port (tests read the bound port back).
    public var port: Int
    /// `nil`: plain HTTP.
    public var tls: TLSFiles?
    /// Bind with `SO_REUSEPORT`: a second gateway (same user) may listen on the same port, and
    /// the kernel spreads new connections over both (an overlapping restart).
    public var reusePort: Bool

    public init(address: String = "0.0.0.0", port: Int = 8080, tls: TLSFiles? = nil, reusePort: Bool = false) {
        self.address = address
        self.port = port
        self.tls = tls
        self.reusePort = reusePort
    }
}

/// PEM certificate chain and private key of the main listener.
public struct TLSFiles: Sendable, Equatable {
    public var certFile: String
    public var keyFile: String

    public init(certFile: String, keyFile: String) {
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// The admin listener (`/healthz`, `/readyz`, `/metrics`).
public struct AdminConfig: Sendable, Equatable {
    public var address: String
    /// 1...65535, or 0 to let the system pick a free port.
    public var port: Int

    public init(address: String = "127.0.0.1", port: Int = 9090) {
        self.address = address
        self.port = port
    }
}

/// Hookshot: where allowed calls go, and with which service token.
/// The defaults of `upstream.*`, in one place: the parser, `UpstreamConfig` and the pool's
/// options all take them from here.
public enum UpstreamDefaults {
    public static let connectTimeoutMs = 2000
    public static let timeoutMs = 10_000
    public static let maxConnections = 64
    public static let queueTimeoutMs = 2000
    public static let maxQueue = 1024
    public static let idleTimeoutMs = 30_000
    public static let maxResponseBytes = 1 << 20
}

public struct UpstreamConfig: Sendable, Equatable {
    /// Normalised `https://host[:port]`: lower-case scheme and host, no trailing slash, the
    /// port only when the file gave one. Requests go to `baseURL + target.path`.
    public var baseURL: String
    /// Host name or IP address (an IPv6 address without brackets); also the TLS SNI and
    /// certificate name to verify (SNI is only sent for names, not for addresses).
    public var host: String
    /// From `base_url`; 443 when it names none.
    public var port: Int
    /// PEM CA bundle to verify Hookshot with; `nil`: the system trust store.
    public var caFile: String?
    public var connectTimeoutMs: Int
    public var timeoutMs: Int
    /// Size of the upstream connection pool (`max_connections`).
    public var maxConnections: Int
    /// How long a call may wait for a free pool connection (then 502), and how many may wait.
    public var queueTimeoutMs: Int
    public var maxQueue: Int
    /// An idle pooled connection is closed after this long.
    public var idleTimeoutMs: Int
    /// Largest Hookshot answer (head and body) the gateway reads (then 502).
    public var maxResponseBytes: Int
    public var serviceToken: ServiceTokenSource

    public init(baseURL: String, host: String, port: Int, caFile: String? = nil,
                connectTimeoutMs: Int = UpstreamDefaults.connectTimeoutMs, timeoutMs: Int = UpstreamDefaults.timeoutMs,
                maxConnections: Int = UpstreamDefaults.maxConnections, queueTimeoutMs: Int = UpstreamDefaults.queueTimeoutMs,
                maxQueue: Int = UpstreamDefaults.maxQueue, idleTimeoutMs: Int = UpstreamDefaults.idleTimeoutMs,
                maxResponseBytes: Int = UpstreamDefaults.maxResponseBytes, serviceToken: ServiceTokenSource) {
        self.baseURL = baseURL
        self.host = host
        self.port = port
        self.caFile = caFile
        self.connectTimeoutMs = connectTimeoutMs
        self.timeoutMs = timeoutMs
        self.maxConnections = maxConnections
        self.queueTimeoutMs = queueTimeoutMs
        self.maxQueue = maxQueue
        self.idleTimeoutMs = idleTimeoutMs
        self.maxResponseBytes = maxResponseBytes
        self.serviceToken = serviceToken
    }
}

/// Where the gateway finds the token it sends to Hookshot. Never the token itself.
public enum ServiceTokenSource: Sendable, Equatable {
    /// A static token in this environment variable.
    case env(String)
    /// A static token in this file (surrounding white space trimmed by the reader; re-read on reload).
    case file(String)
    /// Obtained by the gateway with an OAuth2 client-credentials grant.
    case oauth2(OAuth2Config)
}

/// A secret that is read at run time, never kept in the configuration file.
public enum SecretSource: Sendable, Equatable {
    case env(String)
    case file(String)
}

public struct OAuth2Config: Sendable, Equatable {
    /// As written in the file (`https://...`).
    public var tokenURL: String
    /// `tokenURL`, parsed.
    public var tokenEndpoint: HTTPSURL
    public var clientID: String
    public var clientSecret: SecretSource
    /// Deadline for one token request (connect included).
    public var timeoutMs: Int
    /// A token is replaced in the background once this share of its `expires_in` has passed.
    public var refreshAtPercent: Int
    /// Cap of the exponential backoff between failed token requests.
    public var retryMaxMs: Int
    /// A token is no longer used this long before it expires (at most a tenth of its life),
    /// so that no call leaves with a dying token.
    public var expiryMarginMs: Int

    public init(tokenURL: String, tokenEndpoint: HTTPSURL, clientID: String, clientSecret: SecretSource,
                timeoutMs: Int = 5000, refreshAtPercent: Int = 50, retryMaxMs: Int = 5000, expiryMarginMs: Int = 60_000) {
        self.tokenURL = tokenURL
        self.tokenEndpoint = tokenEndpoint
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.timeoutMs = timeoutMs
        self.refreshAtPercent = refreshAtPercent
        self.retryMaxMs = retryMaxMs
        self.expiryMarginMs = expiryMarginMs
    }
}

public struct AuditConfig: Sendable, Equatable {
    /// SQLite database file; created by the gateway if missing.
    public var path: String
    /// Cap on the upstream response body kept in each response record (0: keep none).
    public var maxBodyBytes: Int
    public var durability: Durability
    /// Records waiting for the writer; past it, callers get 503 at once (bounded memory).
    public var maxQueue: Int
    /// How long a commit waits for a lock held by another connection before failing (503).
    public var busyTimeoutMs: Int
    /// `audit.ship`: copy every record into PostgreSQL (nil: the local file only).
    public var ship: AuditShipConfig?
    /// `audit.signing_key.file`: the Ed25519 private key that signs checkpoints (nil: none).
    public var signingKey: String?
    public var checkpointIntervalS: Int
    /// `audit.checkpoint_log`: where each checkpoint is also appended as a JSON line.
    public var checkpointLog: String?
    /// `audit.rotate`: when the file is closed and renamed, the chain going on in a new file (nil: never).
    public var rotate: AuditRotation?

    public init(path: String, maxBodyBytes: Int = 65536, durability: Durability = .full,
                maxQueue: Int = 10_000, busyTimeoutMs: Int = 1000, ship: AuditShipConfig? = nil,
                signingKey: String? = nil, checkpointIntervalS: Int = 60, checkpointLog: String? = nil,
                rotate: AuditRotation? = nil) {
        self.rotate = rotate
        self.ship = ship
        self.signingKey = signingKey
        self.checkpointIntervalS = checkpointIntervalS
        self.checkpointLog = checkpointLog
        self.path = path
        self.maxBodyBytes = maxBodyBytes
        self.durability = durability
        self.maxQueue = maxQueue
        self.busyTimeoutMs = busyTimeoutMs
    }
}

/// `audit.rotate` (docs/audit.md, "Rotation").
public struct AuditRotation: Sendable, Equatable {
    /// Rotate once the database (its pages, in the main file or still in the -wal) reaches this size.
    public var maxBytes: Int?
    /// Rotate when the UTC date changes (a file holds one UTC day at most).
    public var daily: Bool

    public init(maxBytes: Int? = nil, daily: Bool = false) {
        self.maxBytes = maxBytes
        self.daily = daily
    }
}

public enum Durability: String, Sendable, Equatable, CaseIterable {
    /// fsync per (group) commit: survives a power cut.
    case full
    /// Survives a process crash, not a power cut.
    case normal
}

/// Limits on callers' requests and connections on the main listener.
public struct LimitsConfig: Sendable, Equatable {
    public var maxHeaderBytes: Int
    public var maxBodyBytes: Int
    /// Deadline for receiving a whole request (headers and body), not an idle timer.
    public var clientTimeoutMs: Int
    public var maxConnections: Int
    /// How long SIGTERM waits for calls in flight before exiting anyway.
    public var drainTimeoutMs: Int
    /// Lingering close: how long an answer that ends a connection may take to leave, and how
    /// long input is then read and dropped, so that the client reads the answer, not a reset.
    public var lingerMs: Int

    public init(maxHeaderBytes: Int = 8192, maxBodyBytes: Int = 16384,
                clientTimeoutMs: Int = 15000, maxConnections: Int = 1024, drainTimeoutMs: Int = 30_000,
                lingerMs: Int = 2000) {
        self.lingerMs = lingerMs
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.clientTimeoutMs = clientTimeoutMs
        self.maxConnections = maxConnections
        self.drainTimeoutMs = drainTimeoutMs
    }
}

/// A token bucket: `burst` is the bucket size, refilled at `requestsPerMinute`.
public struct RateLimitConfig: Sendable, Equatable, Hashable {
    public var requestsPerMinute: Int
    public var burst: Int

    public init(requestsPerMinute: Int, burst: Int) {
        self.requestsPerMinute = requestsPerMinute
        self.burst = burst
    }
}

public struct TeamConfig: Sendable, Equatable {
    public var name: String
    /// Lower-case hex SHA-256 of each of the team's keys (several, for rotation).
    public var keySHA256: [String]
    public var allowHooks: AllowList
    /// `nil`: no per-team limit (the global one still applies).
    public var rateLimit: RateLimitConfig?

    public init(name: String, keySHA256: [String], allowHooks: AllowList, rateLimit: RateLimitConfig? = nil) {
        self.name = name
        self.keySHA256 = keySHA256
        self.allowHooks = allowHooks
        self.rateLimit = rateLimit
    }
}

/// Which hooks a team may redeliver. Default deny: an empty set allows nothing.
public enum AllowList: Sendable, Equatable {
    /// `["*"]`: every hook.
    case all
    /// Canonical (lower-case) hook UUIDs.
    case hooks(Set<String>)

    public func allows(hook canonicalID: String) -> Bool {
        switch self {
        case .all: return true
        case .hooks(let ids): return ids.contains(canonicalID)
        }
    }
}

extension GatewayConfig {
    /// One line for `hookgate check-config` and the start-up log; names no secret.
    public var summary: String {
        let scheme = listen.tls == nil ? "http" : "https"
        let limit = globalRateLimit.map { "\($0.requestsPerMinute)/min burst \($0.burst)" } ?? "none"
        let teamWord = teams.count == 1 ? "team" : "teams"
        return "config ok: version \(version.prefix(12)), listen \(scheme)://\(listen.address):\(listen.port), "
            + "admin \(admin.address):\(admin.port), upstream \(upstream.baseURL), \(teams.count) \(teamWord), "
            + "global rate limit \(limit)"
            + (sharedLimits.map { ", limits shared in Redis \($0.redis.address) (on_unavailable \($0.onUnavailable.rawValue))" } ?? "")
    }
}

// Threads: any (pure values; time comes from the caller); the gateway keeps its limiter on the loop.

/// A token bucket in exact integer arithmetic. One token is `unitsPerToken` units; the bucket
/// gains `requestsPerMinute` units per elapsed nanosecond, up to `burst` tokens. It starts full.
/// Time is a monotonic nanosecond count given by the caller; nothing here reads a clock.
public struct TokenBucket: Sendable, Equatable {
    /// Nanoseconds per minute: at `r` units per nanosecond, `r` tokens accrue per minute.
    static let unitsPerToken: UInt64 = 60_000_000_000
    static let nanosPerSecond: UInt64 = 1_000_000_000

    public let limit: RateLimitConfig
    private var units: UInt64
    /// When `units` was last brought up to date; nil before the first use.
    private var updatedAt: UInt64?

    /// `RateLimit-Policy` values for the two names a bucket goes by.
    private let policyFields: (team: String, global: String)

    public init(limit: RateLimitConfig) {
        self.limit = limit
        self.units = Self.capacity(limit)
        self.updatedAt = nil
        self.policyFields = (RateLimitFields.policy("team", limit), RateLimitFields.policy("global", limit))
    }

    public static func == (a: TokenBucket, b: TokenBucket) -> Bool {
        a.limit == b.limit && a.units == b.units && a.updatedAt == b.updatedAt
    }

    private static func capacity(_ limit: RateLimitConfig) -> UInt64 {
        UInt64(max(limit.burst, 1)) * unitsPerToken
    }

    private var rate: UInt64 { UInt64(max(limit.requestsPerMinute, 1)) }

    /// Adds what accrued since the last update (an earlier `now` than before adds nothing).
    mutating func refill(now: UInt64) {
        let capacity = Self.capacity(limit)
        if let last = updatedAt, now > last {
            let (gain, overflow) = (now - last).multipliedReportingOverflow(by: rate)
            let (sum, overflow2) = units.addingReportingOverflow(gain)
            units = overflow || overflow2 ? capacity : min(capacity, sum)
        }
        updatedAt = max(updatedAt ?? now, now)
    }

    /// Whole tokens in the bucket (as of the last refill).
    public var remaining: Int { Int(units / Self.unitsPerToken) }

    var hasToken: Bool { units >= Self.unitsPerToken }

    mutating func take() {
        if hasToken { units -= Self.unitsPerToken }
    }

    /// Whole seconds (rounded up) until one more call is allowed; 0 while a token is left.
    public var secondsUntilNextToken: Int {
        guard !hasToken else { return 0 }
        let deficit = Self.unitsPerToken - units
        let nanos = (deficit + rate - 1) / rate
        return Int((nanos + Self.nanosPerSecond - 1) / Self.nanosPerSecond)
    }

    /// Whole seconds (rounded up) for an empty bucket to refill completely: the policy window.
    public var secondsToRefillFully: Int {
        let r = max(limit.requestsPerMinute, 1)
        return (max(limit.burst, 1) * 60 + r - 1) / r
    }

    /// IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-10) for this bucket,
    /// named `policyName` ("team" or "global").
    public func headers(policyName: String) -> [Refusal.Header] {
        // The policy field never changes for a bucket: made once per bucket and name.
        let policy = policyName == "team" ? policyFields.team : policyName == "global" ? policyFields.global
            : RateLimitFields.policy(policyName, limit)
        return [Refusal.Header("RateLimit-Policy", policy),
                Refusal.Header("RateLimit", RateLimitFields.state(policyName, remaining: remaining, wait: secondsUntilNextToken))]
    }

    /// What the headers of a refusal need to know of this bucket.
    var reading: RateLimitReading {
        RateLimitReading(limit: limit, remaining: remaining, secondsUntilNextToken: secondsUntilNextToken)
    }
}

/// A bucket's state as the RateLimit header fields show it, wherever the bucket lives (here, or
/// in Redis for shared limits).
public struct RateLimitReading: Sendable, Equatable {
    public var limit: RateLimitConfig
    /// Whole tokens left.
    public var remaining: Int
    /// Whole seconds (rounded up) until one more call is allowed; 0 while a token is left.
    public var secondsUntilNextToken: Int

    public init(limit: RateLimitConfig, remaining: Int, secondsUntilNextToken: Int) {
        self.limit = limit
        self.remaining = remaining
        self.secondsUntilNextToken = secondsUntilNextToken
    }

    public func headers(policyName: String) -> [Refusal.Header] {
        [Refusal.Header("RateLimit-Policy", RateLimitFields.policy(policyName, limit)),
         Refusal.Header("RateLimit", RateLimitFields.state(policyName, remaining: remaining, wait: secondsUntilNextToken))]
    }
}

/// The RateLimit / RateLimit-Policy field values.
enum RateLimitFields {
    /// `"team";q=<burst>;w=<seconds to refill fully>`
    static func policy(_ name: String, _ limit: RateLimitConfig) -> String {
        let r = max(limit.requestsPerMinute, 1)
        return "\"\(name)\";q=\(limit.burst);w=\((max(limit.burst, 1) * 60 + r - 1) / r)"
    }

    /// `"team";r=<remaining>;t=<seconds until the next token>`
    static func state(_ name: String, remaining: Int, wait: Int) -> String {
        var value = "\""
        value.reserveCapacity(32)
        value += name
        value += "\";r="
        value += String(remaining)
        value += ";t="
        value += String(wait)
        return value
    }
}

/// Which limit refused a call.
public enum RateLimitScope: String, Sendable, Equatable {
    case team
    case global
}

/// Every rate-limit bucket of the gateway: one per team that has a limit, and the global one.
/// Memory is bounded by the number of teams in the policy.
public struct RateLimiter: Sendable, Equatable {
    public private(set) var global: TokenBucket?
    public private(set) var teams: [String: TokenBucket]

    /// Full buckets for every limit of `policy`.
    public init(policy: Policy) {
        global = policy.globalRateLimit.map(TokenBucket.init(limit:))
        var teams: [String: TokenBucket] = [:]
        for (name, team) in policy.teams {
            if let limit = team.rateLimit { teams[name] = TokenBucket(limit: limit) }
        }
        self.teams = teams
    }

    /// The limiter for a reloaded policy: a bucket whose team (by name) and limit are unchanged
    /// keeps its state, as does an unchanged global limit; new or changed limits start full;
    /// teams that are gone, or lost their limit, are dropped.
    public func reconfigured(for policy: Policy) -> RateLimiter {
        var next = RateLimiter(policy: policy)
        if let old = global, old.limit == policy.globalRateLimit { next.global = old }
        for (name, bucket) in teams where policy.teams[name]?.rateLimit == bucket.limit {
            next.teams[name] = bucket
        }
        return next
    }

    /// Takes one token from the team's bucket and the global one, or from neither.
    ///
    /// Allowed: the headers to add to the forwarded response (the team's limit if it has
    /// one, else the global's, else none). Refused: a 429 naming the limit that ran out (the
    /// team's when both did), whose `Retry-After` is when both limits allow a call again.
    public mutating func admit(team: String, now: UInt64) -> Result<[Refusal.Header], Refusal> {
        // One hash of the team name per call: the bucket is updated in place through its index.
        let index = teams.index(forKey: team)
        if let index { teams.values[index].refill(now: now) }
        global?.refill(now: now)
        let teamBucket = index.map { teams.values[$0] }

        let teamEmpty = teamBucket.map { !$0.hasToken } ?? false
        let globalEmpty = global.map { !$0.hasToken } ?? false
        if teamEmpty || globalEmpty {
            let waits = [teamEmpty ? teamBucket : nil, globalEmpty ? global : nil].compactMap { $0?.secondsUntilNextToken }
            let retryAfter = max(1, waits.max() ?? 1)
            if teamEmpty, let teamBucket {
                return .failure(.rateLimited(team: team, scope: .team, bucket: teamBucket, retryAfter: retryAfter))
            }
            if let global {
                return .failure(.rateLimited(team: team, scope: .global, bucket: global, retryAfter: retryAfter))
            }
        }
        global?.take()
        if let index {
            teams.values[index].take()
            return .success(teams.values[index].headers(policyName: RateLimitScope.team.rawValue))
        }
        return .success(global?.headers(policyName: RateLimitScope.global.rawValue) ?? [])
    }
}

extension Refusal {
    /// 429 with `Retry-After` and the RateLimit header fields of the exhausted `bucket`.
    public static func rateLimited(team: String, scope: RateLimitScope, bucket: TokenBucket, retryAfter: Int) -> Refusal {
        rateLimited(team: team, scope: scope, bucket: bucket.reading, retryAfter: retryAfter)
    }

    /// 429 with `Retry-After` and the RateLimit header fields of the exhausted bucket.
    public static func rateLimited(team: String, scope: RateLimitScope, bucket: RateLimitReading, retryAfter: Int) -> Refusal {
        let detail = switch scope {
        case .team: "team \"\(team)\" is over its rate limit of \(bucket.limit.requestsPerMinute) requests per minute (burst \(bucket.limit.burst))"
        case .global: "the gateway-wide rate limit of \(bucket.limit.requestsPerMinute) requests per minute (burst \(bucket.limit.burst)) is exhausted"
        }
        return Refusal(.rateLimited, status: 429, title: "Too Many Requests", detail: detail,
                       headers: [Header("Retry-After", String(retryAfter))] + bucket.headers(policyName: scope.rawValue))
    }

    /// 403: the team's allow-list does not cover the hook.
    public static func forbidden(team: String, hook: String) -> Refusal {
        Refusal(.forbidden, status: 403, title: "Forbidden", detail: "team \"\(team)\" may not redeliver hook \(hook)")
    }
}

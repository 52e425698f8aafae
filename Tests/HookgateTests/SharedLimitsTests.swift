import Foundation
import Testing
@testable import Hookgate

/// `shared_limits` as check-config reads it, and what the limits script's replies mean (the
/// script itself runs in a real Redis in the integration tests).
@Suite struct SharedLimitsConfigTests {
    @Test func absentMeansInProcessLimits() throws {
        #expect(try parsed(minimal()).sharedLimits == nil)
    }

    @Test func fillsTheDefaults() throws {
        let config = try parsed(minimal(extra: #""shared_limits": {"redis": {"address": "redis.internal:6379"}}"#))
        #expect(config.sharedLimits == SharedLimitsConfig(
            redis: RedisConfig(address: .tcp(host: "redis.internal", port: 6379), password: nil, timeoutMs: 50, keyPrefix: "hookgate:"),
            onUnavailable: .local))
    }

    @Test func readsEveryKey() throws {
        let config = try parsed(minimal(extra: #"""
            "shared_limits": {"redis": {"address": "unix:/run/redis/redis.sock", "password": {"file": "/etc/hookgate/redis-password"},
                                        "timeout_ms": 20, "key_prefix": "gw-prod:"}, "on_unavailable": "refuse"}
            """#))
        #expect(config.sharedLimits == SharedLimitsConfig(
            redis: RedisConfig(address: .unix(path: "/run/redis/redis.sock"), password: .file("/etc/hookgate/redis-password"),
                               timeoutMs: 20, keyPrefix: "gw-prod:"),
            onUnavailable: .refuse))
        let v6 = try parsed(minimal(extra: #""shared_limits": {"redis": {"address": "[::1]:6380", "password": {"env": "REDIS_PW"}}}"#))
        #expect(v6.sharedLimits?.redis == RedisConfig(address: .tcp(host: "::1", port: 6380), password: .env("REDIS_PW")))
        #expect(v6.summary.hasSuffix(", limits shared in Redis [::1]:6380 (on_unavailable local)"))
    }

    @Test func namesEachProblemWithItsPath() {
        #expect(problems(minimal(extra: #""shared_limits": {}"#)) == ["shared_limits.redis: is required"])
        #expect(problems(minimal(extra: #""shared_limits": {"redis": {"address": "redis"}, "on_unavailable": "allow"}"#)) == [
            "shared_limits.redis.address: must be host:port, [IPv6]:port or unix:/path",
            "shared_limits.on_unavailable: must be \"local\" or \"refuse\"",
        ])
        #expect(problems(minimal(extra: #""shared_limits": {"redis": {"address": "redis:0", "timeout_ms": 0, "key_prefix": "a b"}}"#)) == [
            "shared_limits.redis.address: has an invalid port (must be 1 to 65535)",
            "shared_limits.redis.timeout_ms: must be at least 1",
            "shared_limits.redis.key_prefix: must be 1 to 64 printable ASCII characters without spaces",
        ])
        #expect(problems(minimal(extra: #""shared_limits": {"redis": {"address": "unix:relative.sock", "password": "hunter2"}}"#)) == [
            "shared_limits.redis.address: must be unix:/absolute/path",
            "shared_limits.redis.password: an inline secret is not allowed, use {\"env\": NAME} or {\"file\": PATH}",
        ])
        #expect(problems(minimal(extra: #""shared_limits": {"redis": {"address": "r:6379", "db": 2}}"#)) == ["shared_limits.redis.db: unknown key"])
    }
}

@Suite struct SharedLimitsReplyTests {
    let team = RateLimitConfig(requestsPerMinute: 30, burst: 3)
    let global = RateLimitConfig(requestsPerMinute: 600, burst: 50)

    func reply(_ values: [Int64]) -> RedisReply { .array(values.map { .integer($0) }) }

    @Test func anAllowedCallCarriesTheTeamsHeadersElseTheGlobals() {
        #expect(SharedLimits.outcome(reply([1, 1, 2, 0, 0]), team: "claims", teamLimit: team, globalLimit: global)
                == .allowed([Refusal.Header("RateLimit-Policy", "\"team\";q=3;w=6"), Refusal.Header("RateLimit", "\"team\";r=2;t=0")]))
        #expect(SharedLimits.outcome(reply([1, 2, 49, 0, 0]), team: "claims", teamLimit: nil, globalLimit: global)
                == .allowed([Refusal.Header("RateLimit-Policy", "\"global\";q=50;w=5"), Refusal.Header("RateLimit", "\"global\";r=49;t=0")]))
        #expect(SharedLimits.outcome(reply([1, 0, 0, 0, 0]), team: "claims", teamLimit: nil, globalLimit: nil) == .allowed([]))
    }

    @Test func aRefusalIsThe429OfOneGateway() {
        // The same refusal the in-process limiter gives for an empty team bucket 2 s from a token.
        var bucket = TokenBucket(limit: team)
        bucket.refill(now: 0)
        for _ in 0..<3 { bucket.take() }
        bucket.refill(now: 0)
        let expected = Refusal.rateLimited(team: "claims", scope: .team, bucket: bucket, retryAfter: 2)
        #expect(SharedLimits.outcome(reply([0, 1, 0, 2, 2]), team: "claims", teamLimit: team, globalLimit: global) == .refused(expected))
        guard case .refused(let global429) = SharedLimits.outcome(reply([0, 2, 0, 1, 3]), team: "claims", teamLimit: team, globalLimit: global) else {
            Issue.record("not refused")
            return
        }
        #expect(global429.status == 429 && global429.headers.first == Refusal.Header("Retry-After", "3"))
        #expect(global429.headers.contains(Refusal.Header("RateLimit", "\"global\";r=0;t=1")))
    }

    @Test func anythingElseIsNotADecision() {
        #expect(SharedLimits.outcome(.error("ERR boom"), team: "t", teamLimit: team, globalLimit: nil) == nil)
        #expect(SharedLimits.outcome(reply([1, 1, 2]), team: "t", teamLimit: team, globalLimit: nil) == nil)
        #expect(SharedLimits.outcome(reply([0, 0, 0, 0, 1]), team: "t", teamLimit: nil, globalLimit: nil) == nil)
    }
}

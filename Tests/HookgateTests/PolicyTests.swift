import Testing
@testable import Hookgate

private let hookA = "e6db9c1a-d15f-4248-81fa-5b61fc321def"
private let hookB = "0b6b3f0e-3d3c-4b43-9d0a-6f3c2c9e7a11"
private let eventID = "29dd8606-4e01-46cb-aca2-dd6022e74865"
private let claimsKey1 = "demo-claims-key-1"
private let claimsKey2 = "demo-claims-key-2"
private let opsKey = "demo-ops-key-1"
private let auditKey = "demo-audit-key-1"
private let second: UInt64 = 1_000_000_000

/// claims: two keys, hookA only, optional team limit; ops: every hook, no team limit;
/// audit: every hook, optional team limit.
private func policy(claimsLimit: String? = nil, auditLimit: String? = nil, global: String? = nil) throws -> Policy {
    func limit(_ l: String?) -> String { l.map { #", "rate_limit": \#($0)"# } ?? "" }
    let json = #"""
    { "upstream": { "base_url": "https://hookshot.example.com", "service_token": { "env": "T" } },
      "audit": { "path": "/tmp/a.sqlite3" }\#(global.map { #", "global_rate_limit": \#($0)"# } ?? ""),
      "teams": [
        { "name": "claims", "key_sha256": ["\#(SHA256.hex(claimsKey1))", "\#(SHA256.hex(claimsKey2))"],
          "allow_hooks": ["\#(hookA.uppercased())"]\#(limit(claimsLimit)) },
        { "name": "ops", "key_sha256": ["\#(SHA256.hex(opsKey))"], "allow_hooks": ["*"] },
        { "name": "audit", "key_sha256": ["\#(SHA256.hex(auditKey))"], "allow_hooks": ["*"]\#(limit(auditLimit)) }
      ] }
    """#
    return Policy(config: try GatewayConfig.parse(Array(json.utf8), checkFiles: false))
}

private func redeliver(_ key: String?, hook: String = hookA, method: String = "POST") -> RequestFacts {
    RequestFacts(method: method, target: "/hooks/\(hook)/requests/\(eventID)/redeliver", authorization: key.map { "Bearer \($0)" })
}

private func fingerprint(_ key: String) -> String { String(SHA256.hex(key).prefix(16)) }

@Suite struct DecideOrderTests {
    @Test func forwardsAnAllowedCall() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        let v = decide(redeliver(claimsKey1, hook: hookA.uppercased()), policy: p, limiter: &limiter, now: 0)
        #expect(v.decision == .forwarded)
        #expect(v.plan?.team == "claims")
        #expect(v.plan?.target.path == "/hooks/\(hookA)/requests/\(eventID)/redeliver")
        #expect(v.plan?.keyFingerprint == fingerprint(claimsKey1))
        #expect(v.plan?.rateLimitHeaders == [])
        #expect(v.team == "claims")
        #expect(v.hookID == hookA)
        #expect(v.eventRequestID == eventID)
    }

    @Test func methodIsCheckedBeforeTheKey() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        let v = decide(redeliver("unknown-key", method: "GET"), policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.status == 405)
        #expect(v.refusal?.headers == [Refusal.Header("Allow", "POST")])
        #expect(v.team == nil)
        #expect(v.keyFingerprint == fingerprint("unknown-key"))
    }

    @Test func badIdsAreCheckedBeforeTheKey() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        let v = decide(RequestFacts(method: "POST", target: "/hooks/nope/requests/\(eventID)/redeliver"), policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.status == 400)
        #expect(v.decision == .badRequest)
        #expect(v.keyFingerprint == nil)
        #expect(v.hookID == nil)
    }

    @Test func otherPathsAreNotFoundWhateverTheKey() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        let v = decide(RequestFacts(method: "POST", target: "/admin", authorization: "Basic eA=="), policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.status == 404)
        #expect(v.decision == .notFound)
    }

    @Test func queryStringIsBadRequestButIdsAreRecorded() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        let facts = RequestFacts(method: "POST", target: "/hooks/\(hookA)/requests/\(eventID)/redeliver?force=1",
                                 authorization: "Bearer \(claimsKey1)")
        let v = decide(facts, policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.status == 400)
        #expect(v.hookID == hookA)
        #expect(v.eventRequestID == eventID)
        #expect(v.team == nil)
    }

    @Test func missingKeyIsUnauthenticated() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        let v = decide(redeliver(nil), policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.status == 401)
        #expect(v.refusal?.decision == .unauthenticated)
        #expect(v.refusal?.detail == "no key: send Authorization: Bearer <team key>")
        #expect(v.refusal?.headers == [Refusal.Header("WWW-Authenticate", "Bearer")])
        #expect(v.keyFingerprint == nil)
        #expect(v.hookID == hookA)
    }

    @Test func unknownKeyIsUnauthenticatedWithItsFingerprint() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        let v = decide(redeliver("not-a-team-key"), policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.status == 401)
        #expect(v.refusal?.detail == "the key matches no team")
        #expect(v.refusal?.headers == [Refusal.Header("WWW-Authenticate", "Bearer")])
        #expect(v.keyFingerprint == "fbc55c21f782e4a5")
        #expect(v.keyFingerprint?.count == 16)
        #expect(v.team == nil)
    }

    @Test func malformedAuthorizationIsBadRequest() throws {
        let p = try policy()
        let variants: [[String]] = [
            ["Basic eA=="], ["Bearer"], ["Bearer "], ["Bearer a b"], ["Bearer \(claimsKey1)", "Bearer \(claimsKey1)"],
            ["Token \(claimsKey1)"], ["Bearer a=b"], ["Bearer \"x\""], [""], ["Bearer\t\(claimsKey1)"],
        ]
        for values in variants {
            var limiter = RateLimiter(policy: p)
            let facts = RequestFacts(method: "POST", target: "/hooks/\(hookA)/requests/\(eventID)/redeliver", authorization: values)
            let v = decide(facts, policy: p, limiter: &limiter, now: 0)
            #expect(v.refusal?.status == 400, "\(values)")
            #expect(v.refusal?.decision == .badRequest, "\(values)")
            #expect(v.refusal?.detail == "malformed Authorization header: send exactly one, as Bearer <team key>")
            #expect(v.keyFingerprint == nil, "\(values)")
        }
    }

    @Test func bearerSchemeIsCaseInsensitive() throws {
        let p = try policy()
        for header in ["bearer \(claimsKey1)", "BEARER \(claimsKey1)", "  Bearer   \(claimsKey1) "] {
            var limiter = RateLimiter(policy: p)
            let facts = RequestFacts(method: "POST", target: "/hooks/\(hookA)/requests/\(eventID)/redeliver", authorization: header)
            #expect(decide(facts, policy: p, limiter: &limiter, now: 0).plan?.team == "claims", "\(header)")
        }
    }

    @Test func acceptsBothKeysOfARotatingTeam() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        let first = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0)
        let second = decide(redeliver(claimsKey2), policy: p, limiter: &limiter, now: 0)
        #expect(first.plan?.team == "claims")
        #expect(second.plan?.team == "claims")
        #expect(first.plan?.keyFingerprint == fingerprint(claimsKey1))
        #expect(second.plan?.keyFingerprint == fingerprint(claimsKey2))
        #expect(first.plan?.keyFingerprint != second.plan?.keyFingerprint)
    }

    @Test func refusesHookOutsideAllowList() throws {
        let p = try policy(claimsLimit: #"{"requests_per_minute": 60, "burst": 1}"#)
        var limiter = RateLimiter(policy: p)
        let before = limiter
        let v = decide(redeliver(claimsKey1, hook: hookB), policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.status == 403)
        #expect(v.refusal?.decision == .forbidden)
        #expect(v.refusal?.detail == #"team "claims" may not redeliver hook \#(hookB)"#)
        #expect(v.team == "claims")
        #expect(v.keyFingerprint == fingerprint(claimsKey1))
        #expect(limiter == before)
    }

    @Test func wildcardAllowsEveryHook() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        #expect(decide(redeliver(opsKey, hook: hookB), policy: p, limiter: &limiter, now: 0).plan?.team == "ops")
    }
}

@Suite struct RateLimitTests {
    @Test func burstOfThreePassesAndTheFourthIsRefused() throws {
        let p = try policy(claimsLimit: #"{"requests_per_minute": 30, "burst": 3}"#)
        var limiter = RateLimiter(policy: p)
        var headers: [[Refusal.Header]] = []
        for _ in 0..<3 {
            let v = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 5 * second)
            headers.append(v.plan?.rateLimitHeaders ?? [])
        }
        #expect(headers == [
            [Refusal.Header("RateLimit-Policy", #""team";q=3;w=6"#), Refusal.Header("RateLimit", #""team";r=2;t=0"#)],
            [Refusal.Header("RateLimit-Policy", #""team";q=3;w=6"#), Refusal.Header("RateLimit", #""team";r=1;t=0"#)],
            [Refusal.Header("RateLimit-Policy", #""team";q=3;w=6"#), Refusal.Header("RateLimit", #""team";r=0;t=2"#)],
        ])
        let fourth = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 5 * second)
        #expect(fourth.refusal?.status == 429)
        #expect(fourth.refusal?.decision == .rateLimited)
        #expect(fourth.refusal?.title == "Too Many Requests")
        #expect(fourth.refusal?.detail == #"team "claims" is over its rate limit of 30 requests per minute (burst 3)"#)
        #expect(fourth.refusal?.headers == [
            Refusal.Header("Retry-After", "2"),
            Refusal.Header("RateLimit-Policy", #""team";q=3;w=6"#),
            Refusal.Header("RateLimit", #""team";r=0;t=2"#),
        ])
        #expect(fourth.team == "claims")
    }

    @Test func refillsAtTheConfiguredRate() throws {
        let p = try policy(claimsLimit: #"{"requests_per_minute": 30, "burst": 3}"#)
        var limiter = RateLimiter(policy: p)
        for _ in 0..<3 { _ = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0) }
        // One token per 2 s: not yet at 1.5 s (retry in 1 s, rounded up), there at 2 s.
        let early = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 3 * second / 2)
        #expect(early.refusal?.headers.first == Refusal.Header("Retry-After", "1"))
        #expect(early.refusal?.headers.last == Refusal.Header("RateLimit", #""team";r=0;t=1"#))
        let justBefore = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 2 * second - 1)
        #expect(justBefore.refusal?.status == 429)
        let onTime = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 2 * second)
        #expect(onTime.plan?.rateLimitHeaders.last == Refusal.Header("RateLimit", #""team";r=0;t=2"#))
        // After a long idle time the bucket is full again, never fuller.
        let later = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 3600 * second)
        #expect(later.plan?.rateLimitHeaders.last == Refusal.Header("RateLimit", #""team";r=2;t=0"#))
    }

    @Test func refusedCallsConsumeNothing() throws {
        let p = try policy(claimsLimit: #"{"requests_per_minute": 30, "burst": 1}"#, global: #"{"requests_per_minute": 600, "burst": 10}"#)
        var limiter = RateLimiter(policy: p)
        _ = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0)
        #expect(limiter.global?.remaining == 9)
        for i in 1...20 {
            let v = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: UInt64(i) * second / 20)
            #expect(v.refusal?.status == 429)
        }
        #expect(limiter.global?.remaining == 10)
        // Exactly one token accrued by 2 s despite the refused calls.
        #expect(decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 2 * second).decision == .forwarded)
        #expect(decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 2 * second).decision == .rateLimited)
    }

    @Test func globalRefusalConsumesNoTeamToken() throws {
        let p = try policy(auditLimit: #"{"requests_per_minute": 60, "burst": 5}"#, global: #"{"requests_per_minute": 60, "burst": 1}"#)
        var limiter = RateLimiter(policy: p)
        #expect(decide(redeliver(opsKey), policy: p, limiter: &limiter, now: 0).decision == .forwarded)
        let v = decide(redeliver(auditKey), policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.status == 429)
        #expect(limiter.teams["audit"]?.remaining == 5)
    }

    @Test func globalLimitIsSharedByAllTeams() throws {
        let p = try policy(global: #"{"requests_per_minute": 60, "burst": 2}"#)
        var limiter = RateLimiter(policy: p)
        let a = decide(redeliver(opsKey), policy: p, limiter: &limiter, now: 0)
        let b = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0)
        let c = decide(redeliver(opsKey), policy: p, limiter: &limiter, now: 0)
        #expect(a.plan?.rateLimitHeaders == [Refusal.Header("RateLimit-Policy", #""global";q=2;w=2"#),
                                             Refusal.Header("RateLimit", #""global";r=1;t=0"#)])
        #expect(b.plan?.rateLimitHeaders == [Refusal.Header("RateLimit-Policy", #""global";q=2;w=2"#),
                                             Refusal.Header("RateLimit", #""global";r=0;t=1"#)])
        #expect(c.refusal?.detail == "the gateway-wide rate limit of 60 requests per minute (burst 2) is exhausted")
        #expect(c.refusal?.headers == [
            Refusal.Header("Retry-After", "1"),
            Refusal.Header("RateLimit-Policy", #""global";q=2;w=2"#),
            Refusal.Header("RateLimit", #""global";r=0;t=1"#),
        ])
    }

    @Test func teamLimitedCallsShowTheTeamHeadersUnderAGlobalLimit() throws {
        let p = try policy(claimsLimit: #"{"requests_per_minute": 120, "burst": 4}"#, global: #"{"requests_per_minute": 60, "burst": 2}"#)
        var limiter = RateLimiter(policy: p)
        let v = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0)
        #expect(v.plan?.rateLimitHeaders == [Refusal.Header("RateLimit-Policy", #""team";q=4;w=2"#),
                                             Refusal.Header("RateLimit", #""team";r=3;t=0"#)])
        _ = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0)
        let third = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0)
        #expect(third.refusal?.headers.last == Refusal.Header("RateLimit", #""global";r=0;t=1"#))
        #expect(limiter.teams["claims"]?.remaining == 2)
    }

    @Test func whenBothLimitsRunOutTheTeamIsNamedAndRetryAfterCoversBoth() throws {
        let p = try policy(claimsLimit: #"{"requests_per_minute": 60, "burst": 1}"#, global: #"{"requests_per_minute": 10, "burst": 1}"#)
        var limiter = RateLimiter(policy: p)
        _ = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0)
        let v = decide(redeliver(claimsKey1), policy: p, limiter: &limiter, now: 0)
        #expect(v.refusal?.headers == [
            Refusal.Header("Retry-After", "6"),
            Refusal.Header("RateLimit-Policy", #""team";q=1;w=1"#),
            Refusal.Header("RateLimit", #""team";r=0;t=1"#),
        ])
    }

    @Test func teamWithoutLimitIsOnlyGloballyLimited() throws {
        let p = try policy(claimsLimit: #"{"requests_per_minute": 1, "burst": 1}"#, global: #"{"requests_per_minute": 60, "burst": 3}"#)
        var limiter = RateLimiter(policy: p)
        #expect(limiter.teams["ops"] == nil)
        let results = (0..<4).map { _ in decide(redeliver(opsKey), policy: p, limiter: &limiter, now: 0).decision }
        #expect(results == [.forwarded, .forwarded, .forwarded, .rateLimited])
    }

    @Test func noLimitsMeansNoHeaders() throws {
        let p = try policy()
        var limiter = RateLimiter(policy: p)
        for _ in 0..<100 {
            let v = decide(redeliver(opsKey), policy: p, limiter: &limiter, now: 0)
            #expect(v.plan?.rateLimitHeaders == [])
        }
        #expect(limiter.teams.isEmpty)
        #expect(limiter.global == nil)
    }

    @Test func reconfigureKeepsUnchangedTeamsAndResetsChangedOnes() throws {
        let old = try policy(claimsLimit: #"{"requests_per_minute": 30, "burst": 2}"#,
                             auditLimit: #"{"requests_per_minute": 30, "burst": 2}"#,
                             global: #"{"requests_per_minute": 600, "burst": 100}"#)
        var limiter = RateLimiter(policy: old)
        for key in [claimsKey1, claimsKey1, auditKey, auditKey] {
            #expect(decide(redeliver(key), policy: old, limiter: &limiter, now: 0).decision == .forwarded)
        }
        let new = try policy(claimsLimit: #"{"requests_per_minute": 30, "burst": 2}"#,
                             auditLimit: #"{"requests_per_minute": 30, "burst": 3}"#,
                             global: #"{"requests_per_minute": 600, "burst": 100}"#)
        var next = limiter.reconfigured(for: new)
        #expect(next.teams["claims"] == limiter.teams["claims"])
        #expect(next.teams["audit"]?.remaining == 3)
        #expect(next.global?.remaining == 96)
        #expect(decide(redeliver(claimsKey1), policy: new, limiter: &next, now: 0).decision == .rateLimited)
        #expect(decide(redeliver(auditKey), policy: new, limiter: &next, now: 0).decision == .forwarded)

        // A changed global limit starts full; a team that lost its limit loses its bucket.
        let relaxed = try policy(global: #"{"requests_per_minute": 600, "burst": 50}"#)
        let after = next.reconfigured(for: relaxed)
        #expect(after.global?.remaining == 50)
        #expect(after.teams.isEmpty)
    }
}

@Suite struct CredentialsTests {
    @Test func parsesBearerTokens() {
        #expect(Credentials.parse([]) == .absent)
        #expect(Credentials.parse(["Bearer abc.DEF-_~+/=="]) == .bearer("abc.DEF-_~+/=="))
        #expect(Credentials.parse(["Bearer ="]) == .malformed)
        #expect(Credentials.parse(["Bearer a==b"]) == .malformed)
        #expect(Credentials.parse(["Bearerx abc"]) == .malformed)
    }
}

@Suite struct KeyGenTests {
    @Test func makesA43CharacterToken68WithItsHash() {
        let (key, sha) = KeyGen.make()
        #expect(key.utf8.count == 43)
        #expect(Credentials.parse(["Bearer \(key)"]) == .bearer(key))
        #expect(!key.contains("="))
        #expect(sha == SHA256.hex(key))
        #expect(KeyGen.make().key != key)
    }

    @Test func encodesBase64URLWithoutPadding() {
        #expect(KeyGen.base64URL(Array("f".utf8)) == "Zg")
        #expect(KeyGen.base64URL(Array("fo".utf8)) == "Zm8")
        #expect(KeyGen.base64URL(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(KeyGen.base64URL([0xfb, 0xff, 0xbf]) == "-_-_")
        #expect(KeyGen.base64URL([]) == "")
    }

    @Test func reportLabelsKeyAndHashOnSeparateLines() {
        #expect(KeyGen.report(key: "k", sha256: "h") == "key:        k\nkey_sha256: h\n")
    }
}

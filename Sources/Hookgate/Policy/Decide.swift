// Threads: any (pure); runs on the loop for every call.

/// What `decide` needs to know about a caller's request: values only, no I/O.
public struct RequestFacts: Sendable, Equatable {
    public var method: String
    /// The raw request-target of the request line.
    public var target: String
    /// Every `Authorization` field value, in order: empty when absent; two or more is
    /// malformed (400).
    public var authorization: [String]

    public init(method: String, target: String, authorization: [String]) {
        self.method = method
        self.target = target
        self.authorization = authorization
    }

    /// A request with at most one `Authorization` header (`nil`: none).
    public init(method: String, target: String, authorization: String? = nil) {
        self.init(method: method, target: target, authorization: authorization.map { [$0] } ?? [])
    }
}

/// An allowed call: what to send upstream and what to add to the caller's response.
public struct ForwardPlan: Sendable, Equatable {
    public var team: String
    public var target: RedeliverTarget
    public var keyFingerprint: String
    /// `RateLimit-Policy` / `RateLimit` for the forwarded response (may be empty).
    public var rateLimitHeaders: [Refusal.Header]

    public init(team: String, target: RedeliverTarget, keyFingerprint: String, rateLimitHeaders: [Refusal.Header]) {
        self.team = team
        self.target = target
        self.keyFingerprint = keyFingerprint
        self.rateLimitHeaders = rateLimitHeaders
    }
}

/// The outcome of `decide`, with what was learnt about the caller so far (for the audit
/// record and the log line, refusals included).
public struct Verdict: Sendable, Equatable {
    public var outcome: Result<ForwardPlan, Refusal>
    /// The authenticated team; nil until the key matched one.
    public var team: String?
    /// Fingerprint of any well-formed bearer token presented, known or not.
    public var keyFingerprint: String?
    /// Canonical `hook_id` once the ids were parsed (also for a 400 on a query string).
    public var hookID: String?
    /// Canonical `request_id` (the event's), like `hookID`.
    public var eventRequestID: String?

    public init(outcome: Result<ForwardPlan, Refusal>, team: String? = nil, keyFingerprint: String? = nil,
                hookID: String? = nil, eventRequestID: String? = nil) {
        self.outcome = outcome
        self.team = team
        self.keyFingerprint = keyFingerprint
        self.hookID = hookID
        self.eventRequestID = eventRequestID
    }

    public var decision: DecisionWord {
        switch outcome {
        case .success: return .forwarded
        case .failure(let refusal): return refusal.decision
        }
    }

    public var plan: ForwardPlan? {
        if case .success(let plan) = outcome { return plan }
        return nil
    }

    public var refusal: Refusal? {
        if case .failure(let refusal) = outcome { return refusal }
        return nil
    }
}

/// The gateway's decision for one request, in the contract's order of checks:
/// route and method -> ids -> key -> allow-list -> rate limits. The first check that fails
/// names the refusal; a refused call takes no rate-limit token. Pure but for `limiter`,
/// which an allowed call draws from. `now` is a monotonic time in nanoseconds.
///
/// `deferLimits`: the rate limits are checked elsewhere (in Redis, `SharedLimits`): an allowed
/// call takes no token here and its plan has no RateLimit headers yet.
///
/// `refusing`: a refusal decided before the checks (a request that could not be read whole,
/// or the gateway draining). The verdict is that refusal, with what the checks could still
/// tell about the caller — key fingerprint, team, ids — and no rate-limit token is taken.
public func decide(_ facts: RequestFacts, policy: Policy, limiter: inout RateLimiter, now: UInt64,
                   refusing preempt: Refusal? = nil, deferLimits: Bool = false) -> Verdict {
    let credentials = Credentials.parse(facts.authorization)
    // What the checks learn about the caller, recorded whatever the outcome.
    var keyHash: String?
    var keyFingerprint: String?
    var team: String?
    var ids: RedeliverTarget?
    func verdict(_ outcome: Result<ForwardPlan, Refusal>) -> Verdict {
        Verdict(outcome: outcome, team: team, keyFingerprint: keyFingerprint,
                hookID: ids?.hookID, eventRequestID: ids?.requestID)
    }
    if case .bearer(let key) = credentials {
        let hash = KeyDigest.sha256(key)
        keyHash = hash
        keyFingerprint = KeyDigest.fingerprint(sha256: hash)
    }

    // Route and method, then ids.
    let route = Route.match(method: facts.method, target: facts.target)
    switch route {
    case .success(let t):
        ids = t
    case .failure:
        // Whatever the refusal (405, a query string, a request refused before the checks),
        // the ids are recorded whenever the path holds them.
        let utf8 = facts.target.utf8
        let path = utf8.firstIndex(of: UInt8(ascii: "?")).map { String(facts.target[..<$0]) } ?? facts.target
        if case .success(let t) = Route.match(method: "POST", target: path) { ids = t }
    }
    if let preempt {
        if ids != nil, let keyHash, let known = policy.team(forKeySHA256: keyHash) { team = known.name }
        return verdict(.failure(preempt))
    }
    let target: RedeliverTarget
    switch route {
    case .success(let t): target = t
    case .failure(let refusal): return verdict(.failure(refusal))
    }

    // Key.
    guard let keyHash, let keyFingerprint else {
        return verdict(.failure(credentials == .absent
            ? .unauthenticated("no key: send Authorization: Bearer <team key>")
            : .badRequest("malformed Authorization header: send exactly one, as Bearer <team key>")))
    }
    guard let known = policy.team(forKeySHA256: keyHash) else {
        return verdict(.failure(.unauthenticated("the key matches no team")))
    }
    team = known.name

    // Allow-list.
    guard known.allowHooks.allows(hook: target.hookID) else {
        return verdict(.failure(.forbidden(team: known.name, hook: target.hookID)))
    }

    // Rate limits.
    if deferLimits {
        return verdict(.success(ForwardPlan(team: known.name, target: target, keyFingerprint: keyFingerprint, rateLimitHeaders: [])))
    }
    switch limiter.admit(team: known.name, now: now) {
    case .failure(let refusal):
        return verdict(.failure(refusal))
    case .success(let headers):
        return verdict(.success(ForwardPlan(team: known.name, target: target, keyFingerprint: keyFingerprint,
                                            rateLimitHeaders: headers)))
    }
}

// Threads: any (values).

/// The audit `decision` vocabulary of the contract: `forwarded`, or the name of a refusal.
public enum DecisionWord: String, Sendable, CaseIterable {
    case forwarded
    case badRequest = "bad_request"
    case unauthenticated
    case forbidden
    case notFound = "not_found"
    case methodNotAllowed = "method_not_allowed"
    case tooLarge = "too_large"
    case rateLimited = "rate_limited"
    case upstreamError = "upstream_error"
    case upstreamTimeout = "upstream_timeout"
    case draining
    /// `shared_limits` with `on_unavailable: refuse`, and Redis did not answer (503).
    case limitsUnavailable = "limits_unavailable"
    /// The audit log could not record the call (503, fail closed). Such a call can only
    /// appear in logs and metrics: by definition its record did not reach the database.
    case auditUnavailable = "audit_unavailable"
}

/// A refusal by the gateway itself: a status, an RFC 9457 problem, and extra headers.
/// Each check on the request path returns "go on" or one of these (nginx's phase handlers
/// returning NGX_DECLINED or a status); `decision` names it in the log, metrics and audit.
public struct Refusal: Sendable, Equatable, Error {
    public var decision: DecisionWord
    public var status: Int
    public var title: String
    public var detail: String
    public var headers: [Header]

    public struct Header: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) { self.name = name; self.value = value }
    }

    public init(_ decision: DecisionWord, status: Int, title: String, detail: String, headers: [Header] = []) {
        self.decision = decision
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers
    }

    /// RFC 9457 `type`: a stable URI per refusal kind, documented in docs/api.md.
    public var type: String { "urn:hookgate:problem:\(decision.rawValue)" }

    public static func badRequest(_ detail: String) -> Refusal {
        Refusal(.badRequest, status: 400, title: "Bad Request", detail: detail)
    }
    public static func notFound(_ detail: String = "no such route; the gateway serves POST /hooks/{hook_id}/requests/{request_id}/redeliver") -> Refusal {
        Refusal(.notFound, status: 404, title: "Not Found", detail: detail)
    }
    public static func methodNotAllowed(_ method: String) -> Refusal {
        Refusal(.methodNotAllowed, status: 405, title: "Method Not Allowed",
                detail: "method \(method) is not allowed on the redeliver path; use POST",
                headers: [Header("Allow", "POST")])
    }
    public static func unauthenticated(_ detail: String) -> Refusal {
        Refusal(.unauthenticated, status: 401, title: "Unauthorized", detail: detail,
                headers: [Header("WWW-Authenticate", "Bearer")])
    }
    public static func upstreamError(_ detail: String) -> Refusal {
        Refusal(.upstreamError, status: 502, title: "Bad Gateway", detail: detail)
    }
    public static func upstreamTimeout(_ detail: String) -> Refusal {
        Refusal(.upstreamTimeout, status: 504, title: "Gateway Timeout", detail: detail)
    }
    public static func auditUnavailable(_ detail: String) -> Refusal {
        Refusal(.auditUnavailable, status: 503, title: "Service Unavailable", detail: detail)
    }
    public static func notImplemented(_ method: String) -> Refusal {
        Refusal(.methodNotAllowed, status: 501, title: "Not Implemented",
                detail: "method \(method.prefix(32)) is not implemented; the gateway serves POST /hooks/{hook_id}/requests/{request_id}/redeliver")
    }
    public static func limitsUnavailable(_ why: String) -> Refusal {
        Refusal(.limitsUnavailable, status: 503, title: "Service Unavailable",
                detail: "the shared rate limits cannot be checked (\(why)); the call was not forwarded, retry later",
                headers: [Header("Retry-After", "1")])
    }
    public static func draining() -> Refusal {
        Refusal(.draining, status: 503, title: "Service Unavailable",
                detail: "the gateway is shutting down; retry on another instance")
    }
}

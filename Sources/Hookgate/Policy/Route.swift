/// The one route the gateway serves, and the first checks of the contract's order:
/// route and method -> ids (a query string is a malformed request on this route).
public struct RedeliverTarget: Sendable, Equatable {
    /// Canonical (lower-case) UUIDs.
    public var hookID: String
    public var requestID: String

    /// The path as forwarded and audited: ids in canonical form.
    public var path: String { "/hooks/\(hookID)/requests/\(requestID)/redeliver" }
}

public enum Route {
    /// Matches `method` and the raw request-target of an HTTP request line.
    /// Returns the canonical target, or the refusal the contract prescribes.
    public static func match(method: String, target: String) -> Result<RedeliverTarget, Refusal> {
        // Split off a query string first; its presence is judged after route and method.
        let pathPart: Substring
        let hasQuery: Bool
        if let q = target.firstIndex(of: "?") {
            pathPart = target[..<q]
            hasQuery = true
        } else {
            pathPart = Substring(target)
            hasQuery = false
        }
        // Origin-form only: "/hooks/{h}/requests/{r}/redeliver" -> 6 pieces, the first empty.
        let pieces = pathPart.split(separator: "/", omittingEmptySubsequences: false)
        guard pieces.count == 6, pieces[0].isEmpty, pieces[1] == "hooks", pieces[3] == "requests",
              pieces[5] == "redeliver", !pieces[2].isEmpty, !pieces[4].isEmpty
        else { return .failure(.notFound()) }
        guard method == "POST" else { return .failure(.methodNotAllowed(method)) }
        guard let hook = UUIDText.canonical(pieces[2]) else {
            return .failure(.badRequest("hook_id must be a UUID (8-4-4-4-12 hex)"))
        }
        guard let request = UUIDText.canonical(pieces[4]) else {
            return .failure(.badRequest("request_id must be a UUID (8-4-4-4-12 hex)"))
        }
        guard !hasQuery else {
            return .failure(.badRequest("a query string is not accepted on the redeliver path"))
        }
        return .success(RedeliverTarget(hookID: hook, requestID: request))
    }
}

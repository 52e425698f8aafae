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
        // Byte-wise: this runs for every request, and String/Substring comparisons are slow.
        let bytes = Array(target.utf8)
        let pathEnd = bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.count
        let hasQuery = pathEnd < bytes.count
        // Origin-form only: "/hooks/{h}/requests/{r}/redeliver" -> 6 pieces, the first empty.
        var cuts: [Int] = []  // positions of the '/' separators
        cuts.reserveCapacity(6)
        for i in 0..<pathEnd where bytes[i] == UInt8(ascii: "/") {
            cuts.append(i)
            if cuts.count > 5 { return .failure(notFound(method)) }
        }
        guard cuts.count == 5, cuts[0] == 0 else { return .failure(notFound(method)) }
        func piece(_ n: Int) -> ArraySlice<UInt8> {
            bytes[(cuts[n - 1] + 1)..<(n < 5 ? cuts[n] : pathEnd)]
        }
        guard piece(1).elementsEqual("hooks".utf8), piece(3).elementsEqual("requests".utf8),
              piece(5).elementsEqual("redeliver".utf8), !piece(2).isEmpty, !piece(4).isEmpty
        else { return .failure(notFound(method)) }
        guard method == "POST" else { return .failure(.methodNotAllowed(method)) }
        guard let hook = UUIDText.canonical(bytes: piece(2)) else {
            return .failure(.badRequest("hook_id must be a UUID (8-4-4-4-12 hex)"))
        }
        guard let request = UUIDText.canonical(bytes: piece(4)) else {
            return .failure(.badRequest("request_id must be a UUID (8-4-4-4-12 hex)"))
        }
        guard !hasQuery else {
            return .failure(.badRequest("a query string is not accepted on the redeliver path"))
        }
        return .success(RedeliverTarget(hookID: hook, requestID: request))
    }

    /// Methods of RFC 9110 (and PATCH, RFC 5789): elsewhere than on the redeliver path they
    /// are a 404; any other method there is one the gateway does not implement (501).
    static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]

    private static func notFound(_ method: String) -> Refusal {
        knownMethods.contains(method) ? .notFound() : .notImplemented(method)
    }
}

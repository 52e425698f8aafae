// Threads: any (pure); runs on the loop for every call.

/// The one route the gateway serves, and the first checks of the contract's order:
/// route and method -> ids (a query string is a malformed request on this route).
public struct RedeliverTarget: Sendable, Equatable {
    /// Canonical (lower-case) UUIDs.
    public let hookID: String
    public let requestID: String
    /// The path as forwarded and audited: ids in canonical form (made once).
    public let path: String

    public init(hookID: String, requestID: String) {
        self.hookID = hookID
        self.requestID = requestID
        var path = "/hooks/"
        path.reserveCapacity(7 + hookID.utf8.count + 10 + requestID.utf8.count + 10)
        path += hookID
        path += "/requests/"
        path += requestID
        path += "/redeliver"
        self.path = path
    }
}

public enum Route {
    /// Matches `method` and the raw request-target of an HTTP request line.
    /// Returns the canonical target, or the refusal the contract prescribes.
    public static func match(method: String, target: String) -> Result<RedeliverTarget, Refusal> {
        // Byte-wise, in place: this runs for every request, and String/Substring comparisons are slow.
        var target = target
        return target.withUTF8 { bytes in match(method: method, bytes: bytes) }
    }

    private static func match(method: String, bytes: UnsafeBufferPointer<UInt8>) -> Result<RedeliverTarget, Refusal> {
        let pathEnd = bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.count
        let hasQuery = pathEnd < bytes.count
        // Origin-form only: "/hooks/{h}/requests/{r}/redeliver" -> 6 pieces, the first empty;
        // cut at the five '/' separators.
        var cuts = (0, 0, 0, 0, 0)
        var found = 0
        for i in 0..<pathEnd where bytes[i] == UInt8(ascii: "/") {
            switch found {
            case 0: cuts.0 = i
            case 1: cuts.1 = i
            case 2: cuts.2 = i
            case 3: cuts.3 = i
            case 4: cuts.4 = i
            default: return .failure(notFound(method))
            }
            found += 1
        }
        guard found == 5, cuts.0 == 0 else { return .failure(notFound(method)) }
        let hooks = bytes[(cuts.0 + 1)..<cuts.1], hookID = bytes[(cuts.1 + 1)..<cuts.2]
        let requests = bytes[(cuts.2 + 1)..<cuts.3], requestID = bytes[(cuts.3 + 1)..<cuts.4]
        let redeliver = bytes[(cuts.4 + 1)..<pathEnd]
        guard ASCII.equals(hooks, "hooks"), ASCII.equals(requests, "requests"),
              ASCII.equals(redeliver, "redeliver"), !hookID.isEmpty, !requestID.isEmpty
        else { return .failure(notFound(method)) }
        guard method == "POST" else { return .failure(.methodNotAllowed(method)) }
        guard let hook = UUIDText.canonical(bytes: hookID) else {
            return .failure(.badRequest("hook_id must be a UUID (8-4-4-4-12 hex)"))
        }
        guard let request = UUIDText.canonical(bytes: requestID) else {
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

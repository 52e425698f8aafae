// Threads: any (pure renderers).

/// RFC 9457 `application/problem+json` bodies for the gateway's own refusals: `type`,
/// `title`, `status`, `detail`, `request_id`. Nothing else: never a stack trace or secret.
enum ProblemRenderer {
    static let contentType = "application/problem+json"

    static func body(_ refusal: Refusal, requestID: String) -> [UInt8] {
        var out = "{\"type\":"
        JSON.appendString(refusal.type, to: &out)
        out += ",\"title\":"
        JSON.appendString(refusal.title, to: &out)
        out += ",\"status\":\(refusal.status),\"detail\":"
        JSON.appendString(refusal.detail, to: &out)
        out += ",\"request_id\":"
        JSON.appendString(requestID, to: &out)
        out += "}"
        return Array(out.utf8)
    }
}

extension Refusal {
    /// A request that could not be read (malformed, bad framing, too large, too slow).
    static func unreadable(_ error: RequestError) -> Refusal {
        switch error.kind {
        case .headTooLarge, .bodyTooLarge:
            return Refusal(.tooLarge, status: error.status, title: HTTPStatus.reason(error.status), detail: error.detail)
        case .malformed, .badFraming, .unsupportedVersion, .timedOut:
            return Refusal(.badRequest, status: error.status, title: HTTPStatus.reason(error.status), detail: error.detail)
        }
    }

    /// This refusal as the caller gets it: problem+json with the request id, and its headers.
    func answer(requestID: String) -> Answer {
        var fields: [(String, String)] = [("Content-Type", ProblemRenderer.contentType), ("X-Request-Id", requestID)]
        for h in headers { fields.append((h.name, h.value)) }
        return Answer(status: status, decision: decision, headers: fields, body: ProblemRenderer.body(self, requestID: requestID),
                      detail: detail, keepAlive: decision != .draining)
    }
}

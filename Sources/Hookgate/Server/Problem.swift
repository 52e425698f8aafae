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

import Foundation

/// The admin listener's endpoints (loop thread): /healthz, /readyz, /metrics. Never audited.
extension Gateway {

    func handleAdmin(_ req: ServerRequest) {
        let path = String(req.target.prefix { $0 != "?" })
        if let error = req.error {
            req.respond(status: error.status, headers: [("Content-Type", "text/plain; charset=utf-8")],
                        body: Array("\(error.detail)\n".utf8))
            return
        }
        guard req.method == "GET" || req.method == "HEAD" else {
            req.respond(status: 405, headers: [("Allow", "GET"), ("Content-Type", "text/plain; charset=utf-8")],
                        body: Array("method not allowed\n".utf8))
            return
        }
        switch path {
        case "/healthz":
            req.respond(status: 200, headers: [("Content-Type", "application/json")], body: Array(#"{"status":"ok"}"#.utf8))
        case "/readyz":
            let reasons = notReadyReasons()
            let body = reasons.isEmpty
                ? #"{"status":"ready"}"#
                : "{\"status\":\"not_ready\",\"reasons\":[\(reasons.map(JSON.string).joined(separator: ","))]}"
            req.respond(status: reasons.isEmpty ? 200 : 503, headers: [("Content-Type", "application/json")],
                        body: Array(body.utf8))
        case "/metrics":
            let text = metrics.render(gateway: self)
            req.respond(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                        body: Array(text.utf8))
        default:
            req.respond(status: 404, headers: [("Content-Type", "text/plain; charset=utf-8")], body: Array("not found\n".utf8))
        }
    }

}

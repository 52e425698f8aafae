import Foundation
public import Hookgate
import Logging

/// `hookgate simulate-upstream`: an HTTPS Hookshot that speaks the upstream contract, for
/// demos and tests. Every outcome the gateway must handle can be provoked, either for all
/// calls (`mode`) or per call by the first 8 hex digits of the request id (see
/// docs/simulator.md). Each received request is printed on stdout as one JSON line, with the
/// Authorization value reduced to a fingerprint.
public final class Simulator {
    public enum Mode: String, Sendable, CaseIterable {
        case ok, notFound = "404", serverError = "500", unauthorized = "401", slow, close
        /// 200 after an interim `103 Early Hints` / `100 Continue`; 200 without Content-Type.
        case earlyHints = "103", interimContinue = "100", noContentType = "no-content-type"
    }

    public struct Options: Sendable {
        public var address = "127.0.0.1"
        public var port = 0
        public var certFile: String
        public var keyFile: String
        /// Bearer tokens accepted on the redeliver endpoint.
        public var acceptedTokens: [String]
        public var mode: Mode = .ok
        public var slowMs = 3000
        /// OAuth2 client credentials accepted by `POST /auth/token` (nil: no token endpoint).
        public var clientID: String?
        public var clientSecret: String?
        /// `expires_in` of issued tokens, in seconds.
        public var expiresIn = 43_200
        /// The token endpoint's behaviour; SIGUSR1 switches it to `fail`, SIGUSR2 back to `ok`.
        public var tokenMode: TokenMode = .ok
        public init(certFile: String, keyFile: String, acceptedTokens: [String]) {
            self.certFile = certFile
            self.keyFile = keyFile
            self.acceptedTokens = acceptedTokens
        }
    }

    public enum TokenMode: String, Sendable, CaseIterable { case ok, fail, slow }

    /// Per-request behaviour by the request id's first group (documented prefixes).
    static func mode(forRequestID id: String) -> Mode? {
        switch id.prefix(8).lowercased() {
        case "00000404": return .notFound
        case "00000500": return .serverError
        case "00000401": return .unauthorized
        case "00005100": return .slow
        case "0000c105": return .close
        case "00000103": return .earlyHints
        case "00000100": return .interimContinue
        case "0000e0c7": return .noContentType
        default: return nil
        }
    }

    private let options: Options
    /// Given by the caller, who keeps it alive until this simulator (and every event it
    /// created on it) is gone: an event must never outlive its base.
    private let loop: EventLoop
    private var server: HTTPListener?
    private var timers: [ObjectIdentifier: LoopTimer] = [:]
    private var signals: [SignalWatcher] = []
    private let tenantID = RequestID.make()
    private var issued: [String: Date] = [:]
    private var tokenMode: TokenMode
    private let out = LineWriter.stdout
    public private(set) var port = 0

    public init(options: Options, loop: EventLoop) throws {
        self.options = options
        self.loop = loop
        self.tokenMode = options.tokenMode
        let tls = try TLSServerContext(certFile: options.certFile, keyFile: options.keyFile)
        let limits = HTTPListener.Limits(maxConnections: 4096, connection: ConnectionStateMachine.Limits(
            parser: RequestParser.Limits(maxHeadBytes: 64 * 1024, maxBodyBytes: 1 << 20, retainBody: true),
            requestDeadlineMs: 30_000, lingerMs: 1000))
        server = try HTTPListener(loop: loop, address: options.address, port: options.port, tls: tls,
                                  limits: limits) { [unowned self] req in
            self.handle(req)
        }
        port = server?.boundPort ?? 0
    }

    /// Runs a simulator until SIGTERM or SIGINT, on a loop that outlives it.
    public static func run(options: Options, announce extra: [String: String] = [:]) throws {
        let loop = EventLoop()
        try withExtendedLifetime(loop) {
            let simulator = try Simulator(options: options, loop: loop)
            simulator.run(announce: extra)
        }
    }

    private func run(announce extra: [String: String]) {
        ProcessSignals.prepare()
        for sig in [SIGTERM, SIGINT] {
            signals.append(SignalWatcher(loop: loop, signal: sig) { [unowned self] in
                self.server?.close()
                self.loop.stop()
            })
        }
        signals.append(SignalWatcher(loop: loop, signal: SIGUSR1) { [unowned self] in
            self.tokenMode = .fail
            self.out.write(#"{"msg":"token_mode","mode":"fail"}"#)
        })
        signals.append(SignalWatcher(loop: loop, signal: SIGUSR2) { [unowned self] in
            self.tokenMode = .ok
            self.out.write(#"{"msg":"token_mode","mode":"ok"}"#)
        })
        var line = "{\"msg\":\"listening\",\"address\":\(JSON.string(options.address)),\"port\":\(port)"
        for (k, v) in extra.sorted(by: { $0.key < $1.key }) { line += ",\(JSON.string(k)):\(JSON.string(v))" }
        out.write(line + "}")
        loop.run()
        out.flush()
    }

    private func handle(_ req: ServerRequest) {
        if let error = req.error {
            reply(req, error.status, json: "{\"error\":\"bad_request\",\"message\":\(JSON.string(error.detail))}")
            return
        }
        let target = req.target
        let path = String(target.prefix { $0 != "?" })
        let pieces = path.split(separator: "/", omittingEmptySubsequences: false)
        let isRedeliver = pieces.count == 6 && pieces[1] == "hooks" && pieces[3] == "requests" && pieces[5] == "redeliver"
        if path == "/auth/token", options.clientID != nil {
            handleToken(req, target: target)
            return
        }
        let auth = req.headerValues("Authorization").first
        let authorized = auth.map(isAcceptedBearer) ?? false
        var mode = options.mode
        if isRedeliver, let perRequest = Simulator.mode(forRequestID: String(pieces[4])) { mode = perRequest }
        record(req, path: path, target: target, authorized: authorized, mode: isRedeliver ? mode.rawValue : "none")

        guard isRedeliver else {
            reply(req, 404, json: #"{"error":"not_found"}"#)
            return
        }
        guard req.method == "POST" else {
            reply(req, 405, json: #"{"error":"method_not_allowed"}"#)
            return
        }
        guard authorized, mode != .unauthorized else {
            reply(req, 401, json: #"{"error":"invalid_token","error_description":"credentials missing or incorrect"}"#)
            return
        }
        let hook = String(pieces[2]), request = String(pieces[4])
        switch mode {
        case .notFound:
            reply(req, 404, json: #"{"error":"not_found","message":"hook or request not found"}"#)
        case .serverError:
            reply(req, 500, contentType: "text/plain; charset=utf-8", body: "upstream exploded: simulated failure\n")
        case .close:
            req.abortConnection()
        case .slow:
            let key = ObjectIdentifier(req)
            timers[key] = loop.timer(after: options.slowMs) { [unowned self] in
                self.timers[key] = nil
                self.reply(req, 200, json: self.event(hook: hook, request: request))
            }
        case .earlyHints:
            req.respond(status: 200, headers: [("Content-Type", "application/json; charset=utf-8")],
                        body: Array(event(hook: hook, request: request).utf8),
                        interim: [(103, [("Link", "</hints.css>; rel=preload; as=style")])])
        case .interimContinue:
            req.respond(status: 200, headers: [("Content-Type", "application/json; charset=utf-8")],
                        body: Array(event(hook: hook, request: request).utf8), interim: [(100, [])])
        case .noContentType:
            req.respond(status: 200, headers: [], body: Array(event(hook: hook, request: request).utf8))
        case .ok, .unauthorized:
            reply(req, 200, json: event(hook: hook, request: request))
        }
    }

    private func isAcceptedBearer(_ header: String) -> Bool {
        guard header.hasPrefix("Bearer ") else { return false }
        let token = String(header.dropFirst(7))
        if options.acceptedTokens.contains(token) { return true }
        if let expiry = issued[token] { return expiry > Date() }
        return false
    }

    /// `POST /auth/token`: Bold Penguin's client-credentials grant, in the current form
    /// (`grant_type` in the query, Basic credentials) or the older one (form fields in the body).
    private func handleToken(_ req: ServerRequest, target: String) {
        var fields: [String: String] = [:]
        let query = target.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        let body = String(decoding: req.body, as: UTF8.self)
        for part in (query + "&" + body).split(separator: "&") {
            let kv = part.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            if kv.count == 2 { fields[kv[0]] = kv[1] }
        }
        var clientID = fields["client_id"], secret = fields["client_secret"]
        if let auth = req.headerValues("Authorization").first, auth.lowercased().hasPrefix("basic "),
           let decoded = Data(base64Encoded: String(auth.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
           let colon = decoded.firstIndex(of: ":") {
            clientID = String(decoded[..<colon])
            secret = String(decoded[decoded.index(after: colon)...])
        }
        let outcome: String
        defer {
            out.writeNow("{\"msg\":\"token_request\",\"ts\":\"\(Timestamp.rfc3339(Date()))\",\"method\":\(JSON.string(req.method)),"
                      + "\"grant_type\":\(JSON.string(fields["grant_type"] ?? "")),\"outcome\":\"\(outcome)\"}")
        }
        guard req.method == "POST" else {
            outcome = "method_not_allowed"
            reply(req, 405, json: #"{"error":"method_not_allowed"}"#)
            return
        }
        switch tokenMode {
        case .fail:
            outcome = "failed"
            reply(req, 503, json: #"{"error":"temporarily_unavailable"}"#)
            return
        case .slow, .ok:
            break
        }
        guard fields["grant_type"] == "client_credentials" else {
            outcome = "unsupported_grant_type"
            reply(req, 400, json: #"{"error":"unsupported_grant_type"}"#)
            return
        }
        guard clientID == options.clientID, secret == options.clientSecret else {
            outcome = "invalid_client"
            reply(req, 401, json: #"{"error":"invalid_client"}"#)
            return
        }
        outcome = "issued"
        let now = Date()
        issued = issued.filter { $0.value > now }
        let token = "sim-at-" + Hex.encode(SecureRandom.bytes(24))
        issued[token] = now.addingTimeInterval(TimeInterval(options.expiresIn))
        let json = "{\"access_token\":\"\(token)\",\"token_type\":\"bearer\",\"expires_in\":\(options.expiresIn),"
            + "\"refresh_token\":\"sim-rt-\(Hex.encode(SecureRandom.bytes(8)))\",\"scope\":\"\",\"uid\":\"\(RequestID.make())\","
            + "\"info\":{\"simulated\":true}}"
        if tokenMode == .slow {
            let key = ObjectIdentifier(req)
            timers[key] = loop.timer(after: options.slowMs) { [unowned self] in
                self.timers[key] = nil
                self.reply(req, 200, json: json)
            }
        } else {
            reply(req, 200, json: json)
        }
    }

    private func event(hook: String, request: String) -> String {
        let now = Timestamp.rfc3339(Date())
        return "{\"id\":\(JSON.string(request)),\"tenant_id\":\"\(tenantID)\",\"delivery_id\":\"\(RequestID.make())\","
            + "\"event\":\"application_form:inactive\",\"enqueued_at\":\"\(now)\",\"redelivery\":true,"
            + "\"hook_id\":\(JSON.string(hook)),\"created_at\":\"\(now)\",\"updated_at\":\"\(now)\","
            + "\"response_status\":200,\"response_duration_ms\":\(Int.random(in: 20...400))}"
    }

    private func reply(_ req: ServerRequest, _ status: Int, json: String) {
        reply(req, status, contentType: "application/json; charset=utf-8", body: json)
    }

    private func reply(_ req: ServerRequest, _ status: Int, contentType: String, body: String) {
        req.respond(status: status, headers: [("Content-Type", contentType)], body: Array(body.utf8))
    }

    private func record(_ req: ServerRequest, path: String, target: String, authorized: Bool, mode: String) {
        var line = "{\"msg\":\"request\",\"ts\":\"\(Timestamp.rfc3339(Date()))\",\"method\":\(JSON.string(req.method))"
        line += ",\"target\":\(JSON.string(target)),\"path\":\(JSON.string(path))"
        line += ",\"authorized\":\(authorized),\"mode\":\(JSON.string(mode)),\"body_bytes\":\(req.bodyLength),\"headers\":["
        for (i, h) in req.head.headers.enumerated() {
            var value = h.value
            if h.name.lowercased() == "authorization" {
                // Never print a credential: a fingerprint is enough to tell which one came.
                let parts = value.split(separator: " ", maxSplits: 1)
                let scheme = parts.first.map(String.init) ?? ""
                let secret = parts.count > 1 ? String(parts[1]) : ""
                value = "\(scheme) sha256:\(SHA256.hex(secret).prefix(16))"
            }
            line += (i > 0 ? "," : "") + "[\(JSON.string(h.name)),\(JSON.string(value))]"
        }
        out.writeNow(line + "]}")
    }
}

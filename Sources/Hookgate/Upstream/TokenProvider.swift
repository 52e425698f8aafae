import Foundation
import Logging

/// The one upstream access token in use, shared by all calls (loop thread only).
///
/// Static tokens (`{"env"}`/`{"file"}`) are always current. OAuth2 tokens are obtained with
/// a client-credentials grant (Bold Penguin's documented form: `grant_type` in the query,
/// `Authorization: Basic base64(client_id:client_secret)`), reused for every call, and
/// replaced in the background once `refresh_at_percent` of their life has passed, by a single
/// request however many calls are waiting. Failed requests are retried with capped
/// exponential backoff and jitter while the old token stays in use until shortly before it
/// expires. The token request never runs on a caller's path once a token exists.
final class TokenProvider {
    struct Stats {
        var requests = 0
        var failures = 0
        var upstreamRejections = 0
    }

    private enum Source {
        case staticToken(String)
        case oauth2(OAuth2Config, secret: String, pool: UpstreamPool)
    }

    private let loop: EventLoop
    private let logger: Logger
    private var source: Source
    private var token: String?
    /// Monotonic ns after which the token is not used any more (expiry minus the margin).
    private var useUntil: UInt64 = 0
    private var expiresAt: UInt64 = 0
    private var requesting = false
    private var consecutiveFailures = 0
    private var timer: LoopTimer?
    private(set) var lastError: String?
    private(set) var stats = Stats()
    /// A static token Hookshot refused (not used again until a reload).
    private var refusedStatic = false

    init(loop: EventLoop, material: ServiceTokenMaterial, tls: TLSClientContext, logger: Logger) {
        self.loop = loop
        self.logger = logger
        switch material {
        case .staticToken(let t):
            source = .staticToken(t)
            token = t
            useUntil = .max
        case .oauth2(let config, let secret):
            let endpoint = config.tokenEndpoint
            let pool = UpstreamPool(loop: loop, tls: tls, options: UpstreamOptions(
                host: endpoint.host, port: endpoint.port, connectTimeoutMs: config.timeoutMs, timeoutMs: config.timeoutMs,
                maxConnections: 2, idleTimeoutMs: 10_000, maxResponseBytes: 64 * 1024, queueTimeoutMs: config.timeoutMs,
                maxQueued: 4))
            source = .oauth2(config, secret: secret, pool: pool)
            lastError = "no access token obtained yet"
        }
    }

    var isOAuth2: Bool { if case .oauth2 = source { return true } else { return false } }

    /// The pool that talks to the token endpoint (for the resolver), if any.
    var tokenPool: UpstreamPool? { if case .oauth2(_, _, let pool) = source { return pool } else { return nil } }

    /// Starts obtaining a token (OAuth2); a static token needs nothing.
    func start() {
        if isOAuth2 { request() }
    }

    /// The token for a call now, or why there is none.
    func current(now: UInt64 = EventLoop.monotonicNanos()) -> Result<String, TokenUnavailable> {
        if let token, now < useUntil { return .success(token) }
        if refusedStatic { return .failure(TokenUnavailable(reason: lastError ?? "service token refused")) }
        if token != nil {
            token = nil
            lastError = "the access token expired and no new one could be obtained" + (lastError.map { " (\($0))" } ?? "")
            logger.error("upstream access token expired", metadata: ["error": "\(lastError ?? "")"])
            if !requesting && timer == nil { request() }
        }
        return .failure(TokenUnavailable(reason: lastError ?? "no access token"))
    }

    /// Hookshot answered 401 to a call made with `used`: that token is never sent again.
    /// An OAuth2 token is dropped at once and a new one requested (calls get 502 until it
    /// arrives); a static token stays refused until a reload brings (or re-reads) one.
    func upstreamRejected(_ used: String) {
        stats.upstreamRejections += 1
        guard used == token else { return }  // already replaced
        token = nil
        useUntil = 0
        switch source {
        case .staticToken:
            refusedStatic = true
            lastError = "Hookshot refused the service token (401); it is not sent again: fix it and reload (SIGHUP)"
            logger.error("upstream rejected the service token; no call is forwarded until a reload")
        case .oauth2:
            lastError = "Hookshot refused the access token (401); a new one is being obtained"
            logger.warning("upstream rejected the access token; dropped it, obtaining a new one")
            if !requesting {
                timer?.cancel()
                timer = nil
                request()
            }
        }
    }

    /// New secret material after a reload (a re-read token or client-secret file).
    func replace(_ material: ServiceTokenMaterial) {
        switch (material, source) {
        case (.staticToken(let t), .staticToken):
            // A reload is the operator's word that this token is to be used (again).
            source = .staticToken(t)
            token = t
            useUntil = .max
            refusedStatic = false
            lastError = nil
        case (.oauth2(_, let secret), .oauth2(let config, _, let pool)):
            source = .oauth2(config, secret: secret, pool: pool)
        default:
            break  // a change of kind needs a restart (reported by the reload)
        }
    }

    private func request() {
        guard case .oauth2(let config, let secret, let pool) = source, !requesting else { return }
        requesting = true
        stats.requests += 1
        let endpoint = config.tokenEndpoint
        let basic = Data("\(config.clientID):\(secret)".utf8).base64EncodedString()
        let hostHeader = endpoint.hasExplicitPort ? "\(endpoint.host):\(endpoint.port)" : endpoint.host
        let path = endpoint.path.isEmpty ? "/" : endpoint.path
        let head = "POST \(path)?grant_type=client_credentials HTTP/1.1\r\nHost: \(hostHeader)\r\n"
            + "Authorization: Basic \(basic)\r\nAccept: application/json\r\nUser-Agent: hookgate/\(BuildInfo.version)\r\n"
            + "Content-Length: 0\r\n\r\n"
        let started = EventLoop.monotonicNanos()
        pool.send(UpstreamCall(head: head)) { [unowned self] result in
            self.requesting = false
            switch result {
            case .success(let response):
                self.handle(response, config: config, started: started)
            case .failure(let failure):
                self.failed("token endpoint: \(failure)", config: config)
            }
        }
    }

    private func handle(_ response: UpstreamResponse, config: OAuth2Config, started: UInt64) {
        guard response.status == 200 else {
            failed("token endpoint answered \(response.status)", config: config)
            return
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
              let accessToken = object["access_token"] as? String, !accessToken.isEmpty,
              accessToken.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }),
              let expiresIn = (object["expires_in"] as? NSNumber)?.doubleValue, expiresIn > 0
        else {
            failed("token endpoint answered 200 without a usable access_token and expires_in", config: config)
            return
        }
        let lifeNs = UInt64(expiresIn * 1e9)
        let marginNs = min(UInt64(config.expiryMarginMs) * 1_000_000, lifeNs / 10)
        token = accessToken
        expiresAt = started + lifeNs
        useUntil = expiresAt - marginNs
        consecutiveFailures = 0
        lastError = nil
        let refreshInMs = Int(Double(lifeNs) * Double(config.refreshAtPercent) / 100 / 1e6)
        timer = loop.timer(after: max(refreshInMs, 10)) { [unowned self] in
            self.timer = nil
            self.request()
        }
        logger.info("upstream access token obtained", metadata: [
            "expires_in_s": .stringConvertible(expiresIn), "refresh_in_ms": .stringConvertible(refreshInMs),
        ])
    }

    private func failed(_ why: String, config: OAuth2Config) {
        stats.failures += 1
        consecutiveFailures += 1
        let haveToken = token != nil && EventLoop.monotonicNanos() < useUntil
        lastError = why
        // Exponential backoff from 250 ms, capped, with jitter (50-100 % of the step).
        let step = min(Double(config.retryMaxMs), 250 * pow(2, Double(min(consecutiveFailures - 1, 20))))
        let delay = Int(step * Double.random(in: 0.5...1.0))
        logger.error("upstream access token request failed", metadata: [
            "error": "\(why)", "retry_in_ms": .stringConvertible(delay), "token_still_valid": "\(haveToken)",
        ])
        timer = loop.timer(after: delay) { [unowned self] in
            self.timer = nil
            self.request()
        }
    }

    /// Seconds the current token is still used for (0 without one); for metrics.
    var secondsLeft: Double {
        guard token != nil else { return 0 }
        if useUntil == .max { return .infinity }
        let now = EventLoop.monotonicNanos()
        return now < useUntil ? Double(useUntil - now) / 1e9 : 0
    }
}

struct TokenUnavailable: Error, CustomStringConvertible {
    var reason: String
    var description: String { "upstream access token unavailable: \(reason)" }
}

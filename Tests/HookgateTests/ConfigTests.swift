import Foundation
import HookgateTestSupport
import Testing
@testable import Hookgate

/// The smallest valid configuration; tests add or replace members.
private let hashA = "56dc0b10e7d64ee476bd2e8077e7b387e57c81cdad30ca6f7e52b730b094ac39"
private let hashB = "72ebd315c25b4e1d8eb437a722972af06a8f9fdc8a519c1dde31f9f20d679fce"
private let hook = "e6db9c1a-d15f-4248-81fa-5b61fc321def"

func minimal(upstream: String = #""base_url": "https://hookshot.example.com", "service_token": {"env": "TOKEN"}"#,
                     audit: String = #""path": "/tmp/audit.sqlite3""#,
                     extra: String = "") -> String {
    #"{ "upstream": { \#(upstream) }, "audit": { \#(audit) }\#(extra.isEmpty ? "" : ", " + extra) }"#
}

func problems(_ json: String, checkFiles: Bool = false) -> [String] {
    do {
        _ = try GatewayConfig.parse(Array(json.utf8), checkFiles: checkFiles)
        return []
    } catch {
        return error.problems.map(\.description)
    }
}

func parsed(_ json: String, checkFiles: Bool = false) throws -> GatewayConfig {
    try GatewayConfig.parse(Array(json.utf8), checkFiles: checkFiles)
}

private func team(_ body: String) -> String { #""teams": [ { \#(body) } ]"# }

private let validTeam = #""name": "claims", "key_sha256": ["\#(hashA)"], "allow_hooks": ["\#(hook)"]"#

@Suite struct ConfigDefaultsTests {
    @Test func fillsEveryDefaultOfAMinimalFile() throws {
        let config = try parsed(minimal())
        #expect(config.listen == ListenConfig(address: "0.0.0.0", port: 8080, tls: nil))
        #expect(config.admin == AdminConfig(address: "127.0.0.1", port: 9090))
        #expect(config.upstream.baseURL == "https://hookshot.example.com")
        #expect(config.upstream.host == "hookshot.example.com")
        #expect(config.upstream.port == 443)
        #expect(config.upstream.caFile == nil)
        #expect(config.upstream.connectTimeoutMs == 2000)
        #expect(config.upstream.timeoutMs == 10000)
        #expect(config.upstream.maxConnections == 64)
        #expect(config.upstream.queueTimeoutMs == 2000)
        #expect(config.upstream.maxQueue == 1024)
        #expect(config.upstream.idleTimeoutMs == 30_000)
        #expect(config.upstream.maxResponseBytes == 1_048_576)
        #expect(config.upstream.serviceToken == .env("TOKEN"))
        #expect(config.audit == AuditConfig(path: "/tmp/audit.sqlite3", maxBodyBytes: 65536, durability: .full))
        #expect(config.limits == LimitsConfig(maxHeaderBytes: 8192, maxBodyBytes: 16384, clientTimeoutMs: 15000, maxConnections: 1024))
        #expect(config.globalRateLimit == nil)
        #expect(config.teams.isEmpty)
        #expect(config.summary == "config ok: version \(config.version.prefix(12)), listen http://0.0.0.0:8080, admin 127.0.0.1:9090, "
                + "upstream https://hookshot.example.com, 0 teams, global rate limit none")
    }

    @Test func versionIsTheSHA256OfTheExactBytes() throws {
        let text = minimal()
        let config = try parsed(text)
        #expect(config.version == SHA256.hex(text))
        #expect(config.version.count == 64)
        let spaced = try parsed(text + "\n")
        #expect(spaced.version != config.version)
    }

    @Test func exampleConfigParsesWithoutFileChecks() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("config.example.json").path
        let config = try GatewayConfig.load(path: path, checkFiles: false)
        #expect(config.listen.tls == nil)  // plain HTTP, so that check-config passes on the example as it stands
        #expect(config.upstream.host == "hookshot-uat.beta.boldpenguin.com")
        #expect(config.globalRateLimit == RateLimitConfig(requestsPerMinute: 600, burst: 50))
        #expect(config.teams.map(\.name) == ["claims", "ops"])
        #expect(config.teams[0].keySHA256 == [SHA256.hex("demo-claims-key-1"), SHA256.hex("demo-claims-key-2")])
        #expect(config.teams[0].allowHooks == .hooks([hook]))
        #expect(config.teams[0].rateLimit == RateLimitConfig(requestsPerMinute: 30, burst: 5))
        #expect(config.teams[1].allowHooks == .all)
        #expect(config.teams[1].keySHA256 == [SHA256.hex("demo-ops-key-1")])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(config.version == SHA256.hex(bytes: bytes))
    }

    @Test func nullMeansAbsent() throws {
        let config = try parsed(minimal(extra: #""listen": {"tls": null, "port": null}, "global_rate_limit": null"#))
        #expect(config.listen.tls == nil)
        #expect(config.listen.port == 8080)
        #expect(config.globalRateLimit == nil)
    }

    @Test func portZeroMeansAnyFreePort() throws {
        let config = try parsed(minimal(extra: #""listen": {"port": 0}, "admin": {"port": 0}"#))
        #expect(config.listen.port == 0)
        #expect(config.admin.port == 0)
    }

    @Test func normalisesKeyHashesAndHookIds() throws {
        let config = try parsed(minimal(extra: team(#""name": "claims", "key_sha256": ["\#(hashA.uppercased())"], "allow_hooks": ["\#(hook.uppercased())"]"#)))
        #expect(config.teams[0].keySHA256 == [hashA])
        #expect(config.teams[0].allowHooks == .hooks([hook]))
    }
}

@Suite struct ConfigValidationTests {
    @Test func reportsUnknownKeysAtEveryLevel() {
        #expect(problems(minimal(extra: #""listen": {"tsl": {}}, "colour": 1"#)) == ["listen.tsl: unknown key", "colour: unknown key"])
        #expect(problems(minimal(extra: team(validTeam + #", "keys": []"#))) == ["teams[0].keys: unknown key"])
    }

    @Test func reportsMissingRequiredKeys() {
        #expect(problems("{}") == ["upstream: is required", "audit: is required"])
        #expect(problems(minimal(upstream: "", audit: "")) == [
            "upstream.base_url: is required",
            #"upstream.service_token: is required: {"env": NAME}, {"file": PATH} or {"oauth2": {...}}"#,
            "audit.path: is required",
        ])
        #expect(problems(minimal(extra: #""teams": [{}]"#)) == [
            "teams[0].name: is required",
            "teams[0].key_sha256: is required: a list of SHA-256 hashes of the team's keys (see hookgate keygen)",
        ])
    }

    @Test func reportsWrongTypes() {
        #expect(problems(minimal(extra: #""listen": {"port": "8080", "address": 1}, "admin": [], "teams": {}"#)) == [
            "listen.address: must be a string, not a number",
            "listen.port: must be a number, not a string",
            "admin: must be an object, not a list",
            "teams: must be a list, not an object",
        ])
        #expect(problems("[]") == ["(file): must contain a JSON object, not a list"])
    }

    @Test func booleansAreNotNumbers() {
        #expect(problems(minimal(extra: #""listen": {"port": true}"#)) == ["listen.port: must be a number, not a boolean"])
        #expect(problems(minimal(extra: #""limits": {"max_connections": false}"#)) == ["limits.max_connections: must be a number, not a boolean"])
    }

    @Test func rejectsFractionalIntegers() throws {
        #expect(problems(minimal(extra: #""limits": {"max_body_bytes": 1.5}"#)) == ["limits.max_body_bytes: must be a whole number"])
        #expect(try parsed(minimal(extra: #""limits": {"max_body_bytes": 2048.0}"#)).limits.maxBodyBytes == 2048)
        #expect(problems(minimal(extra: #""listen": {"port": 1e20}"#)) == ["listen.port: must be at most 65535"])
        #expect(problems(minimal(extra: #""listen": {"port": 99999999999999999999999}"#)) == ["listen.port: must be at most 65535"])
    }

    @Test func reportsInvalidJSON() {
        let found = problems(#"{"upstream": "#)
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("(file): not valid JSON") == true)
    }

    @Test func checksPortRanges() {
        #expect(problems(minimal(extra: #""listen": {"port": 65536}, "admin": {"port": -1}"#)) == [
            "listen.port: must be at most 65535", "admin.port: must be at least 0",
        ])
        #expect(problems(minimal(extra: #""listen": {"port": 9000}, "admin": {"port": 9000}"#)) == [
            "admin.port: must differ from listen.port (9000)",
        ])
        #expect(problems(minimal(upstream: #""base_url": "https://h.example:0", "service_token": {"env": "T"}"#)) == [
            "upstream.base_url: has an invalid port (must be 1 to 65535)",
        ])
    }

    @Test func reusePortIsAnOptionalBoolean() throws {
        #expect(try parsed(minimal()).listen.reusePort == false)
        #expect(try parsed(minimal(extra: #""listen": {"reuse_port": true}"#)).listen.reusePort == true)
        #expect(problems(minimal(extra: #""listen": {"reuse_port": 1}"#)) == ["listen.reuse_port: must be true or false, not a number"])
        #expect(problems(minimal(extra: #""listen": {"reuse_port": "yes"}"#)) == ["listen.reuse_port: must be true or false, not a string"])
    }

    @Test func checksListenAddresses() {
        #expect(problems(minimal(extra: #""listen": {"address": "not an address"}"#)) == ["listen.address: must be an IP address or a host name"])
        #expect(problems(minimal(extra: #""listen": {"address": "::"}, "admin": {"address": "localhost"}"#)).isEmpty)
    }

    @Test func baseURLMustBeAnHTTPSOrigin() throws {
        func baseURL(_ url: String) -> [String] {
            problems(minimal(upstream: #""base_url": "\#(url)", "service_token": {"env": "T"}"#))
        }
        #expect(baseURL("http://hookshot.example.com") == ["upstream.base_url: must use https (upstream TLS is always verified)"])
        #expect(baseURL("ftp://hookshot.example.com") == ["upstream.base_url: must be an https:// URL"])
        #expect(baseURL("https://hookshot.example.com/api") == ["upstream.base_url: must not have a path (only https://host[:port])"])
        #expect(baseURL("https://hookshot.example.com/?a=b") == ["upstream.base_url: must not have a query string"])
        #expect(baseURL("https://hookshot.example.com#x") == ["upstream.base_url: must not have a fragment"])
        #expect(baseURL("https://user:pw@hookshot.example.com") == ["upstream.base_url: must not contain user information (user:password@)"])
        #expect(baseURL("https://") == ["upstream.base_url: must be an https:// URL"])
        #expect(baseURL("https://:443") == ["upstream.base_url: has no host"])

        let slash = try parsed(minimal(upstream: #""base_url": "HTTPS://Hookshot.Example.com:8443/", "service_token": {"env": "T"}"#))
        #expect(slash.upstream.baseURL == "https://hookshot.example.com:8443")
        #expect(slash.upstream.host == "hookshot.example.com")
        #expect(slash.upstream.port == 8443)
        let v6 = try parsed(minimal(upstream: #""base_url": "https://[::1]:9443", "service_token": {"env": "T"}"#))
        #expect(v6.upstream.host == "::1")
        #expect(v6.upstream.port == 9443)
        #expect(v6.upstream.baseURL == "https://[::1]:9443")
    }

    @Test func checksTimeoutsAndLimitsBounds() {
        let found = problems(minimal(
            upstream: #""base_url": "https://h.example", "service_token": {"env": "T"}, "connect_timeout_ms": 0, "timeout_ms": 600001, "max_connections": 0, "queue_timeout_ms": 0, "max_queue": 0, "idle_timeout_ms": 999, "max_response_bytes": 67108865"#,
            audit: #""path": "/a", "max_body_bytes": -1, "durability": "fsync""#,
            extra: #""limits": {"max_header_bytes": 100, "max_body_bytes": 0, "client_timeout_ms": 0, "max_connections": 0}"#))
        #expect(found == [
            "upstream.connect_timeout_ms: must be at least 1",
            "upstream.timeout_ms: must be at most 600000",
            "upstream.max_connections: must be at least 1",
            "upstream.queue_timeout_ms: must be at least 1",
            "upstream.max_queue: must be at least 1",
            "upstream.idle_timeout_ms: must be at least 1000",
            "upstream.max_response_bytes: must be at most 67108864",
            "audit.max_body_bytes: must be at least 0",
            #"audit.durability: must be "full" or "normal""#,
            "limits.max_header_bytes: must be at least 1024",
            "limits.max_body_bytes: must be at least 1",
            "limits.client_timeout_ms: must be at least 1",
            "limits.max_connections: must be at least 1",
        ])
    }

    @Test func readsThePoolBounds() throws {
        let up = try parsed(minimal(upstream: #""base_url": "https://h.example", "service_token": {"env": "T"}, "max_connections": 128, "queue_timeout_ms": 500, "max_queue": 10, "idle_timeout_ms": 60000, "max_response_bytes": 4096"#)).upstream
        let values: [Int] = [up.maxConnections, up.queueTimeoutMs, up.maxQueue, up.idleTimeoutMs, up.maxResponseBytes]
        #expect(values == [128, 500, 10, 60000, 4096])
    }

    @Test func acceptsNormalDurability() throws {
        #expect(try parsed(minimal(audit: #""path": "/a", "durability": "normal""#)).audit.durability == .normal)
    }

    @Test func refusesInlineServiceTokens() {
        let inline = #"upstream.service_token: an inline token is not allowed, use {"env": NAME} or {"file": PATH}"#
        for token in [#""s3cr3t""#, #"{"value": "s3cr3t"}"#, #"{"token": "s3cr3t"}"#] {
            #expect(problems(minimal(upstream: #""base_url": "https://h.example", "service_token": \#(token)"#)) == [inline], "\(token)")
        }
    }

    @Test func serviceTokenNeedsExactlyOneSource() {
        func token(_ t: String) -> [String] { problems(minimal(upstream: #""base_url": "https://h.example", "service_token": \#(t)"#)) }
        #expect(token("{}") == [#"upstream.service_token: must have exactly one of "env", "file", "oauth2""#])
        #expect(token(#"{"env": "A", "file": "/b"}"#) == [#"upstream.service_token: must have exactly one of "env", "file", "oauth2""#])
        #expect(token("42") == [#"upstream.service_token: must be an object: {"env": NAME}, {"file": PATH} or {"oauth2": {...}}"#])
        #expect(token(#"{"env": "1BAD-NAME"}"#) == ["upstream.service_token.env: must be an environment variable name (letters, digits and _, not starting with a digit)"])
        #expect(token(#"{"env": "A", "extra": 1}"#) == ["upstream.service_token.extra: unknown key"])
    }

    @Test func neverReadsSecretSources() throws {
        // The variable is unset and the file does not exist; validation must not care.
        let env = try parsed(minimal(upstream: #""base_url": "https://h.example", "service_token": {"env": "HOOKGATE_TEST_SURELY_UNSET_VARIABLE"}"#), checkFiles: true)
        #expect(env.upstream.serviceToken == .env("HOOKGATE_TEST_SURELY_UNSET_VARIABLE"))
        let file = try parsed(minimal(upstream: #""base_url": "https://h.example", "service_token": {"file": "/nonexistent/hookgate/token"}"#), checkFiles: true)
        #expect(file.upstream.serviceToken == .file("/nonexistent/hookgate/token"))
    }

    @Test func parsesOAuth2ServiceToken() throws {
        let config = try parsed(minimal(upstream: #""base_url": "https://h.example", "service_token": {"oauth2": {"token_url": "https://auth.example/auth/token", "client_id": "gw", "client_secret": {"file": "/run/secrets/bp"}}}"#))
        guard case .oauth2(let oauth) = config.upstream.serviceToken else {
            Issue.record("not oauth2: \(config.upstream.serviceToken)")
            return
        }
        #expect(oauth.tokenURL == "https://auth.example/auth/token")
        #expect(oauth.tokenEndpoint == HTTPSURL(host: "auth.example", port: 443, hasExplicitPort: false, path: "/auth/token"))
        #expect(oauth.clientID == "gw")
        #expect(oauth.clientSecret == .file("/run/secrets/bp"))
    }

    @Test func validatesOAuth2Settings() {
        let found = problems(minimal(upstream: #""base_url": "https://h.example", "service_token": {"oauth2": {"token_url": "http://auth.example/token", "client_secret": "hunter2"}}"#))
        #expect(found == [
            "upstream.service_token.oauth2.token_url: must use https (upstream TLS is always verified)",
            "upstream.service_token.oauth2.client_id: is required",
            #"upstream.service_token.oauth2.client_secret: an inline secret is not allowed, use {"env": NAME} or {"file": PATH}"#,
        ])
        let nested = problems(minimal(upstream: #""base_url": "https://h.example", "service_token": {"oauth2": {"token_url": "https://a.example/t", "client_id": "x", "client_secret": {"value": "hunter2"}}}"#))
        #expect(nested == [#"upstream.service_token.oauth2.client_secret: an inline secret is not allowed, use {"env": NAME} or {"file": PATH}"#])
        let oauthInSecret = problems(minimal(upstream: #""base_url": "https://h.example", "service_token": {"oauth2": {"token_url": "https://a.example/t", "client_id": "x", "client_secret": {"oauth2": {}}}}"#))
        #expect(oauthInSecret == [
            #"upstream.service_token.oauth2.client_secret: must have exactly one of "env", "file""#,
            "upstream.service_token.oauth2.client_secret.oauth2: unknown key",
        ])
    }

    @Test func checksKeyHashes() {
        #expect(problems(minimal(extra: team(#""name": "claims", "key_sha256": [], "allow_hooks": ["*"]"#))) == [
            "teams[0].key_sha256: must list at least one key hash",
        ])
        #expect(problems(minimal(extra: team(#""name": "claims", "key_sha256": ["abc", "\#(hashA)", 7, "\#(hashA.dropLast())g"], "allow_hooks": ["*"]"#))) == [
            "teams[0].key_sha256[0]: must be a SHA-256 hash: 64 hex characters",
            "teams[0].key_sha256[2]: must be a SHA-256 hash: 64 hex characters",
            "teams[0].key_sha256[3]: must be a SHA-256 hash: 64 hex characters",
        ])
        #expect(problems(minimal(extra: team(#""name": "claims", "key_sha256": "\#(hashA)", "allow_hooks": ["*"]"#))) == [
            "teams[0].key_sha256: must be a list, not a string",
        ])
    }

    @Test func refusesDuplicateNamesAndKeyHashes() {
        let teams = #"""
        "teams": [
          { "name": "claims", "key_sha256": ["\#(hashA)", "\#(hashA.uppercased())"], "allow_hooks": ["*"] },
          { "name": "billing", "key_sha256": ["\#(hashB)"], "allow_hooks": ["*"] },
          { "name": "claims", "key_sha256": ["\#(hashB)"], "allow_hooks": ["*"] }
        ]
        """#
        #expect(problems(minimal(extra: teams)) == [
            "teams[0].key_sha256[1]: duplicate key hash (also teams[0].key_sha256[0])",
            #"teams[2].name: duplicate team name "claims" (also teams[0].name)"#,
            #"teams[2].key_sha256[0]: duplicate key hash (also teams[1].key_sha256[0] of team "billing")"#,
        ])
    }

    @Test func checksTeamNames() {
        #expect(problems(minimal(extra: team(#""name": "claims team", "key_sha256": ["\#(hashA)"], "allow_hooks": ["*"]"#))) == [
            "teams[0].name: must be 1 to 64 characters from A-Z a-z 0-9 . _ -",
        ])
        #expect(problems(minimal(extra: team(#""name": "", "key_sha256": ["\#(hashA)"], "allow_hooks": ["*"]"#))) == [
            "teams[0].name: must not be empty",
        ])
    }

    @Test func checksAllowLists() throws {
        #expect(problems(minimal(extra: team(#""name": "c", "key_sha256": ["\#(hashA)"], "allow_hooks": ["*", "\#(hook)"]"#))) == [
            #"teams[0].allow_hooks: "*" must be the only entry (it already allows every hook)"#,
        ])
        #expect(problems(minimal(extra: team(#""name": "c", "key_sha256": ["\#(hashA)"], "allow_hooks": ["\#(hook)", "hook-1", 3]"#))) == [
            #"teams[0].allow_hooks[1]: must be a hook UUID (8-4-4-4-12 hex) or "*""#,
            #"teams[0].allow_hooks[2]: must be a hook UUID (8-4-4-4-12 hex) or "*""#,
        ])
        #expect(problems(minimal(extra: team(#""name": "c", "key_sha256": ["\#(hashA)"], "allow_hooks": "*""#))) == [
            "teams[0].allow_hooks: must be a list, not a string",
        ])
        let empty = try parsed(minimal(extra: team(#""name": "c", "key_sha256": ["\#(hashA)"], "allow_hooks": []"#)))
        #expect(empty.teams[0].allowHooks == .hooks([]))
    }

    @Test func checksRateLimits() throws {
        let found = problems(minimal(extra: #"""
        "global_rate_limit": { "requests_per_minute": 0 },
        "teams": [
          { "name": "a", "key_sha256": ["\#(hashA)"], "allow_hooks": ["*"], "rate_limit": { "requests_per_minute": 10, "burst": 1 } },
          { "name": "b", "key_sha256": ["\#(hashB)"], "allow_hooks": ["*"], "rate_limit": { "requests_per_minute": 10, "burst": 0 } }
        ]
        """#))
        #expect(found == [
            "global_rate_limit.requests_per_minute: must be at least 1",
            "global_rate_limit.burst: is required",
            "teams[1].rate_limit.burst: must be at least 1",
        ])
        let ok = try parsed(minimal(extra: team(validTeam + #", "rate_limit": {"requests_per_minute": 30, "burst": 5}"#)))
        #expect(ok.teams[0].rateLimit == RateLimitConfig(requestsPerMinute: 30, burst: 5))
    }

    @Test func reportsManyProblemsAtOnce() {
        let found = problems(#"""
        { "listen": { "port": 70000, "tsl": 1 },
          "upstream": { "base_url": "http://x.example", "service_token": "tok" },
          "audit": { "durability": "sometimes" },
          "teams": [ { "name": "a", "key_sha256": ["zz"], "allow_hooks": ["*"], "rate_limit": { "requests_per_minute": 1, "burst": 0 } } ] }
        """#)
        #expect(found == [
            "listen.port: must be at most 65535",
            "listen.tsl: unknown key",
            "upstream.base_url: must use https (upstream TLS is always verified)",
            #"upstream.service_token: an inline token is not allowed, use {"env": NAME} or {"file": PATH}"#,
            "audit.path: is required",
            #"audit.durability: must be "full" or "normal""#,
            "teams[0].key_sha256[0]: must be a SHA-256 hash: 64 hex characters",
            "teams[0].rate_limit.burst: must be at least 1",
        ])
    }

    @Test func errorDescriptionListsOneProblemPerLine() {
        do {
            _ = try GatewayConfig.parse(Array("{}".utf8))
            Issue.record("parsed")
        } catch {
            #expect(error.description == "upstream: is required\naudit: is required")
        }
    }

    @Test func unreadableFileIsAProblem() {
        do {
            _ = try GatewayConfig.load(path: "/nonexistent/hookgate.json")
            Issue.record("loaded")
        } catch {
            #expect(error.problems == [ConfigProblem(path: "(file)", message: "cannot read /nonexistent/hookgate.json: no such file")])
        }
    }
}

@Suite struct ConfigFileCheckTests {
    let dir: URL

    init() throws {
        dir = URL(fileURLWithPath: TestDirectory.make("config"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data("pem".utf8).write(to: dir.appendingPathComponent("tls.crt"))
        try Data("pem".utf8).write(to: dir.appendingPathComponent("tls.key"))
    }

    private func config(cert: String, key: String, ca: String) -> String {
        minimal(upstream: #""base_url": "https://h.example", "ca_file": "\#(ca)", "service_token": {"env": "T"}"#,
                audit: #""path": "\#(dir.path)/not-yet/audit.sqlite3""#,
                extra: #""listen": {"tls": {"cert_file": "\#(cert)", "key_file": "\#(key)"}}"#)
    }

    @Test func acceptsExistingFilesAndMissingAuditPath() throws {
        let parsed = try GatewayConfig.parse(Array(config(cert: "\(dir.path)/tls.crt", key: "\(dir.path)/tls.key", ca: "\(dir.path)/tls.crt").utf8))
        #expect(parsed.listen.tls == TLSFiles(certFile: "\(dir.path)/tls.crt", keyFile: "\(dir.path)/tls.key"))
        #expect(parsed.upstream.caFile == "\(dir.path)/tls.crt")
        try? FileManager.default.removeItem(at: dir)
    }

    @Test func reportsMissingAndDirectoryFiles() {
        let text = config(cert: "\(dir.path)/missing.crt", key: dir.path, ca: "\(dir.path)/ca.pem")
        #expect(problems(text, checkFiles: true) == [
            "listen.tls.cert_file: no such file: \(dir.path)/missing.crt",
            "listen.tls.key_file: is a directory, not a file: \(dir.path)",
            "upstream.ca_file: no such file: \(dir.path)/ca.pem",
        ])
        #expect(problems(text, checkFiles: false).isEmpty)
        try? FileManager.default.removeItem(at: dir)
    }

    @Test func tlsNeedsBothFiles() {
        #expect(problems(minimal(extra: #""listen": {"tls": {"cert_file": "/x.crt"}}"#)) == ["listen.tls.key_file: is required"])
    }
}

package import Foundation
package import Hookgate

/// Writes an audit database the way a gateway would have over a long time — the gateway's own
/// schema, columns and hash chain — so that queries, reports and `audit verify` can be measured
/// on a year-sized file without a year of traffic (bench/AUDIT.md, "A year of traffic").
///
/// Traffic is spread like real traffic: `teams` teams with their own keys, user agents and
/// client networks, `hooks` hooks shared out among them, calls evenly spread over `days` in
/// time order, a decision mix like production's (mostly forwarded and answered 200, then
/// refusals and upstream failures), one redeliver in ten repeating a recent Hookshot request
/// id of the same hook, and a few calls in flight at once (a response recorded after later
/// requests). The same seed gives the same file.
package enum AuditGenerator {
    package struct Options: Sendable {
        package var calls: Int
        package var days: Int
        package var teams: Int
        package var hooks: Int
        package var seed: UInt64
        /// UTC midnight of the first day.
        package var start: Date

        package init(calls: Int, days: Int = 90, teams: Int = 20, hooks: Int = 2000, seed: UInt64 = 1,
                     start: Date = Date(timeIntervalSince1970: 1_735_689_600)) {  // 2025-01-01
            self.calls = calls
            self.days = days
            self.teams = teams
            self.hooks = hooks
            self.seed = seed
            self.start = start
        }
    }

    package struct Summary: Sendable {
        package var calls = 0
        package var records = 0
        package var decisions: [String: Int] = [:]
        package var seconds = 0.0
    }

    /// Creates the database at `path` (which must not exist). `progress` gets (calls written, calls).
    package static func generate(path: String, options: Options,
                                 progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws(AuditError) -> Summary {
        let started = Date()
        let db = try AuditSchema.openForWriting(path: path, durability: .normal, busyTimeoutMs: 1000)
        defer { db.close() }
        // A bulk load: no fsync, a large page cache; the file is an ordinary audit file after.
        try db.execute("PRAGMA synchronous = OFF")
        try db.execute("PRAGMA cache_size = -524288")
        let q = AuditSchema.requestColumns + ["hash"], r = AuditSchema.responseColumns + ["hash"]
        let insertRequest = try db.prepare("INSERT INTO audit_requests (\(q.joined(separator: ", "))) VALUES (\(q.map { _ in "?" }.joined(separator: ", ")))")
        let insertResponse = try db.prepare("INSERT INTO audit_responses (\(r.joined(separator: ", "))) VALUES (\(r.map { _ in "?" }.joined(separator: ", ")))")
        var traffic = Traffic(options: options)
        var seq: Int64 = 0
        var head = AuditChain.genesis
        let context = SHA256Context()
        var scratch = [UInt8]()
        var summary = Summary()
        func insert(_ table: String, _ content: [SQLValue], _ statement: SQLiteStatement) throws(AuditError) {
            seq += 1
            var values = [SQLValue]()
            values.reserveCapacity(content.count + 3)
            values.append(.int(seq))
            values.append(contentsOf: content)
            values.append(.text(head))
            head = AuditChain.hash(table: table, values: values, context: context, buffer: &scratch)
            values.append(.text(head))
            try statement.run(values)
            summary.records += 1
        }
        // Calls in flight: their responses are written a few requests later.
        var inFlight: [AuditResponseRecord] = []
        try db.execute("BEGIN")
        for i in 0..<options.calls {
            let (request, response) = traffic.call(i)
            try insert("audit_requests", request.values, insertRequest)
            summary.decisions[response.decision, default: 0] += 1
            inFlight.append(response)
            if inFlight.count > traffic.concurrency() {
                let done = inFlight.remove(at: traffic.index(below: inFlight.count))
                try insert("audit_responses", done.values(maxBodyBytes: 65_536), insertResponse)
            }
            if (i + 1) % 50_000 == 0 {
                try db.execute("COMMIT")
                try db.execute("BEGIN")
                progress?(i + 1, options.calls)
            }
        }
        for done in inFlight { try insert("audit_responses", done.values(maxBodyBytes: 65_536), insertResponse) }
        try db.execute("COMMIT")
        // The summaries and the lookup, in batches as the gateway's writer would have written them.
        try AuditDerived.catchUp(db, batchRecords: AuditDerived.writerBatchRecords)
        try db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        summary.calls = options.calls
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    /// The calls, one after another, from a seeded generator.
    private struct Traffic {
        struct Team {
            var name: String
            var fingerprint: String
            var userAgent: String
            var network: String
            var tenant: String
            var hooks: [String]
        }

        let options: Options
        var random: SplitMix64
        let teams: [Team]
        let configVersion: String
        /// Recent (hook, Hookshot request id) pairs, for redeliveries of the same request.
        var recent: [(hook: String, event: String)] = []
        let spacingMs: Double

        init(options: Options) {
            self.options = options
            var random = SplitMix64(seed: options.seed)
            let agents = ["payments-redeliver/2.3.1", "curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1",
                          "claims-replayer/0.9", "okhttp/4.12.0"]
            let perTeam = max(1, options.hooks / max(1, options.teams))
            teams = (0..<options.teams).map { i in
                Team(name: String(format: "team-%02d", i + 1),
                     fingerprint: String(SHA256.hex("generated-team-key-\(options.seed)-\(i)").prefix(16)),
                     userAgent: agents[i % agents.count], network: "10.\(20 + i).\(i % 4)",
                     tenant: Self.uuid4(&random),
                     hooks: (0..<perTeam).map { _ in Self.uuid4(&random) })
            }
            configVersion = SHA256.hex("generated-config-\(options.seed)")
            spacingMs = Double(options.days) * 86_400_000 / Double(max(1, options.calls))
            self.random = random
        }

        mutating func index(below n: Int) -> Int { Int(random.next() % UInt64(n)) }
        mutating func chance(_ p: Double) -> Bool { Double(random.next() >> 11) / Double(1 << 53) < p }
        mutating func concurrency() -> Int { 1 + index(below: 6) }

        static func uuid4(_ random: inout SplitMix64) -> String {
            let high = random.next() & 0xffff_ffff_ffff_0fff | 0x4000
            let low = random.next() & 0x3fff_ffff_ffff_ffff | 0x8000_0000_0000_0000
            return UUIDText.format(high: high, low: low)
        }

        /// A gateway request id (UUID v7) for the time `ms`.
        mutating func requestID(ms: UInt64) -> String {
            let high = ms << 16 | 0x7000 | (random.next() & 0x0fff)
            let low = random.next() & 0x3fff_ffff_ffff_ffff | 0x8000_0000_0000_0000
            return UUIDText.format(high: high, low: low)
        }

        /// What happened to one call, by the production mix (percent): forwarded 86 (Hookshot
        /// answers 200, or now and then 404, 422 or 500), forbidden 4, unauthenticated 3,
        /// rate_limited 3, bad_request 1.5, upstream_error 1, upstream_timeout 0.5, not_found 0.5,
        /// method_not_allowed 0.3, too_large 0.2.
        mutating func call(_ i: Int) -> (AuditRequestRecord, AuditResponseRecord) {
            let startMs = options.start.timeIntervalSince1970 * 1000
            let ms = startMs + (Double(i) + Double(index(below: 1000)) / 1000) * spacingMs
            let received = Date(timeIntervalSince1970: ms / 1000)
            let team = teams[index(below: teams.count)]
            let hook = team.hooks[index(below: team.hooks.count)]
            var event = Self.uuid4(&random)
            if !recent.isEmpty && chance(0.1) {
                let again = recent[index(below: recent.count)]
                if again.hook == hook || chance(0.5) { event = again.event }
            }
            if recent.count < 10_000 { recent.append((hook, event)) } else { recent[index(below: recent.count)] = (hook, event) }
            let roll = index(below: 1000)
            let decision: DecisionWord
            switch roll {
            case 0..<860: decision = .forwarded
            case 860..<900: decision = .forbidden
            case 900..<930: decision = .unauthenticated
            case 930..<960: decision = .rateLimited
            case 960..<975: decision = .badRequest
            case 975..<985: decision = .upstreamError
            case 985..<990: decision = .upstreamTimeout
            case 990..<995: decision = .notFound
            case 995..<998: decision = .methodNotAllowed
            default: decision = .tooLarge
            }
            let known = decision != .unauthenticated
            var path = "/hooks/\(hook)/requests/\(event)/redeliver"
            var method = "POST"
            var hookID: String? = hook, eventID: String? = event
            switch decision {
            case .badRequest: path += "?retry=1"
            case .notFound: path = "/hooks/\(hook)/requests/\(event)"; hookID = nil; eventID = nil
            case .methodNotAllowed: method = "GET"
            default: break
            }
            let request = AuditRequestRecord(
                requestID: requestID(ms: UInt64(ms)), receivedAt: Timestamp.rfc3339(received),
                clientAddr: "\(team.network).\(2 + index(below: 250))", team: known ? team.name : nil,
                keyFingerprint: known || chance(0.5) ? team.fingerprint : nil, method: method, path: path,
                hookID: hookID, eventRequestID: eventID, decision: decision == .forwarded ? "forwarded" : decision.rawValue,
                userAgent: team.userAgent, clientRequestID: chance(0.3) ? Self.uuid4(&random) : nil,
                configVersion: configVersion)
            return (request, response(to: request, decision: decision, team: team, event: event, received: received))
        }

        mutating func response(to request: AuditRequestRecord, decision: DecisionWord, team: Team, event: String,
                               received: Date) -> AuditResponseRecord {
            var status: Int, upstream: Int? = nil, upstreamMs: Double? = nil, body: [UInt8]? = nil, detail: String? = nil
            var total = Double(index(below: 200)) / 100 + 0.05
            switch decision {
            case .forwarded:
                let answer = index(below: 100)
                status = answer < 97 ? 200 : answer < 98 ? 404 : answer < 99 ? 422 : 500
                upstream = status
                let duration = 20 + index(below: 380)
                upstreamMs = Double(duration) + Double(index(below: 900)) / 100
                total += upstreamMs!
                let now = Timestamp.rfc3339(received.addingTimeInterval(total / 1000))
                body = Array((status == 200
                    ? "{\"id\":\"\(event)\",\"tenant_id\":\"\(team.tenant)\",\"delivery_id\":\"\(Self.uuid4(&random))\","
                        + "\"event\":\"application_form:inactive\",\"enqueued_at\":\"\(now)\",\"redelivery\":true,"
                        + "\"hook_id\":\"\(request.hookID ?? "")\",\"created_at\":\"\(request.receivedAt)\","
                        + "\"updated_at\":\"\(now)\",\"attempt\":\(2 + index(below: 5)),\"response_status\":200,"
                        + "\"response_duration_ms\":\(duration),\"signature\":\"sha256=\(SHA256.hex(event))\"}"
                    : "{\"error\":\"\(status == 404 ? "not_found" : status == 422 ? "unprocessable" : "internal")\"}").utf8)
            case .forbidden:
                status = 403
                detail = "team \"\(team.name)\" may not redeliver hook \(request.hookID ?? "")"
            case .unauthenticated:
                status = 401
                detail = request.keyFingerprint == nil ? "no key: send Authorization: Bearer <team key>" : "the key matches no team"
            case .rateLimited:
                status = 429
                detail = "team \"\(team.name)\" is over its limit of 600 requests per minute"
            case .badRequest:
                status = 400
                detail = "a query string is not allowed"
            case .upstreamError:
                status = 502
                detail = "upstream unreachable: no connection (TCP and TLS handshake) within 5000 ms"
            case .upstreamTimeout:
                status = 504
                upstreamMs = 30_000
                total += 30_000
                detail = "upstream did not answer within 30000 ms"
            case .notFound:
                status = 404
                detail = "no such route: POST /hooks/{hook_id}/requests/{request_id}/redeliver is the only one"
            case .methodNotAllowed:
                status = 405
                detail = "method GET not allowed: use POST"
            default:
                status = 413
                detail = "request body exceeds 65536 bytes"
            }
            return AuditResponseRecord(
                requestID: request.requestID, completedAt: Timestamp.rfc3339(received.addingTimeInterval(total / 1000)),
                decision: decision.rawValue, status: status, upstreamStatus: upstream, upstreamMs: upstreamMs,
                totalMs: total, upstreamContentType: body == nil ? nil : "application/json; charset=utf-8",
                upstreamBody: body, detail: detail)
        }
    }
}

/// A small seeded generator (SplitMix64), so a file can be made again exactly.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

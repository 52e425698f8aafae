import Foundation
import HookgateTestSupport
import Testing
@testable import Hookgate

// MARK: - Fixture

private let hookA = "e6db9c1a-d15f-4248-81fa-5b61fc321def"
private let hookB = "0b6b3f0e-3d3c-4b43-9d0a-6f3c2c9e7a11"
private let event1 = "29dd8606-4e01-46cb-aca2-dd6022e74865"
private let config = String(repeating: "ab", count: 32)
private func rid(_ n: Int) -> String { "00000000-0000-4000-8000-0000000000\(n < 16 ? "0" : "")\(String(n, radix: 16))" }
// r1 .. r5 in time order; r3 and r4 share received_at, and r4's id sorts first.
private let r1 = rid(1), r2 = rid(2), r3 = rid(0x0c), r4 = rid(0x0b), r5 = rid(5)

/// Writes chained records exactly as `AuditWriter.commit` does: the next seq, the previous
/// record's hash, then the hash of `[seq] + values + [prev_hash]`.
private final class ChainWriter {
    let path: String
    let db: SQLiteConnection
    private(set) var seq: Int64 = 0
    private(set) var head = AuditChain.genesis
    private let maxBodyBytes: Int

    init(path: String, maxBodyBytes: Int = 65_536) throws {
        self.path = path
        self.maxBodyBytes = maxBodyBytes
        db = try AuditSchema.openForWriting(path: path, durability: .normal, busyTimeoutMs: 1000)
    }

    func append(_ record: AuditRequestRecord) throws {
        try insert(table: "audit_requests", columns: AuditSchema.requestColumns, values: record.values)
    }

    func append(_ record: AuditResponseRecord) throws {
        try insert(table: "audit_responses", columns: AuditSchema.responseColumns, values: record.values(maxBodyBytes: maxBodyBytes))
    }

    private func insert(table: String, columns: [String], values: [SQLValue]) throws {
        seq += 1
        let full = [.int(seq)] + values + [.text(head)]
        let hash = AuditChain.hash(table: table, values: full)
        let names = columns + ["hash"]
        let sql = "INSERT INTO \(table) (\(names.joined(separator: ", "))) VALUES (\(names.map { _ in "?" }.joined(separator: ", ")))"
        try db.prepare(sql).run(full + [.text(hash)])
        head = hash
    }
}

private func request(_ id: String, at time: String, team: String?, hook: String, decision: DecisionWord,
                     userAgent: String? = "claims-bot/1.0") -> AuditRequestRecord {
    AuditRequestRecord(
        requestID: id, receivedAt: time, clientAddr: "10.0.0.7", team: team,
        keyFingerprint: team.map { _ in "0123456789abcdef" }, method: "POST",
        path: "/hooks/\(hook)/requests/\(event1)/redeliver", hookID: hook, eventRequestID: event1,
        decision: decision.rawValue, userAgent: userAgent, clientRequestID: nil, configVersion: config)
}

private func response(_ id: String, at time: String, decision: DecisionWord, status: Int, upstream: Int? = nil,
                      upstreamMs: Double? = nil, totalMs: Double, body: String? = nil, detail: String? = nil) -> AuditResponseRecord {
    AuditResponseRecord(
        requestID: id, completedAt: time, decision: decision.rawValue, status: status, upstreamStatus: upstream,
        upstreamMs: upstreamMs, totalMs: totalMs, upstreamContentType: body.map { _ in "application/json" },
        upstreamBody: body.map { Array($0.utf8) }, detail: detail)
}

private let body1 = #"{"delivery_id":"d-1","event":"claim.created","tenant_id":"t-9","status":"queued"}"#

/// A temp directory with a database of five requests, written interleaved like the gateway
/// does (r3's response after r4's; r5 has none): 9 records.
private struct Fixture {
    let dir: URL
    let path: String
    let writer: ChainWriter

    init() throws {
        dir = URL(fileURLWithPath: TestDirectory.make("audit"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        path = dir.appendingPathComponent("audit.sqlite3").path
        writer = try ChainWriter(path: path)
        try writer.append(request(r1, at: "2025-03-01T09:00:00.000Z", team: "claims", hook: hookA, decision: .forwarded))
        try writer.append(response(r1, at: "2025-03-01T09:00:00.016Z", decision: .forwarded, status: 200, upstream: 200,
                                   upstreamMs: 12.5, totalMs: 15.25, body: body1))
        try writer.append(request(r2, at: "2025-03-01T09:30:00.000Z", team: "claims", hook: hookB, decision: .forbidden,
                                  userAgent: #"curl/8, "test""#))
        try writer.append(response(r2, at: "2025-03-01T09:30:00.001Z", decision: .forbidden, status: 403, totalMs: 0.5,
                                   detail: "hook not allowed"))
        try writer.append(request(r3, at: "2025-03-01T10:00:00.000Z", team: nil, hook: hookA, decision: .unauthenticated,
                                  userAgent: ""))
        try writer.append(request(r4, at: "2025-03-01T10:00:00.000Z", team: "ops", hook: hookA, decision: .forwarded))
        try writer.append(response(r4, at: "2025-03-01T10:00:00.040Z", decision: .forwarded, status: 404, upstream: 404,
                                   upstreamMs: 30, totalMs: 40, body: #"{"error":"not found"}"#))
        try writer.append(response(r3, at: "2025-03-01T10:00:00.041Z", decision: .unauthenticated, status: 401, totalMs: 1))
        try writer.append(request(r5, at: "2025-03-02T00:00:00.000Z", team: "ops", hook: hookB, decision: .forwarded))
    }

    func ids(_ filter: AuditFilter) throws -> [String] {
        try AuditQuery(path: path).list(filter).rows.map { row in
            if case .text(let id) = row[0] { return id }
            return "?"
        }
    }

    /// A separate read-write connection, as someone tampering with the file would use.
    func tamper(_ sql: String) throws {
        try SQLiteConnection(path: path).execute(sql)
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }
}

private func column(_ name: String, _ row: [SQLValue]) -> SQLValue? {
    AuditQuery.pairColumns.firstIndex(of: name).map { row[$0] }
}

// MARK: - Filters

@Suite struct AuditFilterTests {
    @Test func noFilterListsEveryRequestByTimeThenRequestID() throws {
        let f = try Fixture()
        defer { f.remove() }
        #expect(try f.ids(AuditFilter()) == [r1, r2, r4, r3, r5])
    }

    @Test func filtersByEachField() throws {
        let f = try Fixture()
        defer { f.remove() }
        #expect(try f.ids(.parse(team: "claims")) == [r1, r2])
        #expect(try f.ids(.parse(team: "nobody")) == [])
        #expect(try f.ids(.parse(hook: hookA.uppercased())) == [r1, r4, r3])
        #expect(try f.ids(.parse(eventRequestID: event1)).count == 5)
        #expect(try f.ids(.parse(requestID: r4.uppercased())) == [r4])
        #expect(try f.ids(.parse(decision: "forbidden")) == [r2])
        #expect(try f.ids(.parse(decision: "unauthenticated")) == [r3])
        // r5 has no response record: its decision comes from the request record.
        #expect(try f.ids(.parse(decision: "forwarded")) == [r1, r4, r5])
        #expect(try f.ids(.parse(status: 404)) == [r4])
        #expect(try f.ids(.parse(status: 200)) == [r1])
    }

    @Test func combinesFilters() throws {
        let f = try Fixture()
        defer { f.remove() }
        #expect(try f.ids(.parse(team: "ops", hook: hookA, decision: "forwarded")) == [r4])
        #expect(try f.ids(.parse(team: "ops", decision: "forwarded", since: "2025-03-01T12:00:00Z")) == [r5])
        #expect(try f.ids(.parse(team: "claims", status: 404)) == [])
    }

    @Test func sinceIsInclusiveUntilExclusive() throws {
        let f = try Fixture()
        defer { f.remove() }
        #expect(try f.ids(.parse(since: "2025-03-01T09:30:00Z")) == [r2, r4, r3, r5])
        #expect(try f.ids(.parse(until: "2025-03-01T10:00:00Z")) == [r1, r2])
        #expect(try f.ids(.parse(since: "2025-03-01T09:30:00Z", until: "2025-03-01T10:00:00.001Z")) == [r2, r4, r3])
        #expect(try f.ids(.parse(since: "2025-03-01")) == [r1, r2, r4, r3, r5])
        #expect(try f.ids(.parse(since: "2025-03-02")) == [r5])
    }

    @Test func sinceAndUntilConvertOffsetsToUTC() throws {
        let f = try Fixture()
        defer { f.remove() }
        // 11:30+02:00 is 09:30Z; 05:00-05:00 is 10:00Z.
        #expect(try f.ids(.parse(since: "2025-03-01T11:30:00+02:00")) == [r2, r4, r3, r5])
        #expect(try f.ids(.parse(until: "2025-03-01T05:00:00.000-05:00")) == [r1, r2])
        #expect(try f.ids(.parse(since: "2025-03-01T11:30:00.001+02:00", until: "2025-03-01T10:30:00+00:30")) == [])
        // A fraction finer than a millisecond rounds up: just before r2 includes it, just after does not.
        #expect(try f.ids(.parse(since: "2025-03-01T09:29:59.9999Z", until: "2025-03-01T09:45:00Z")) == [r2])
        #expect(try f.ids(.parse(since: "2025-03-01T09:30:00.0001Z", until: "2025-03-01T09:45:00Z")) == [])
    }

    @Test func limitTruncatesAndZeroMeansAll() throws {
        let f = try Fixture()
        defer { f.remove() }
        let query = try AuditQuery(path: f.path)
        let two = try query.list(.parse(limit: 2))
        #expect(two.rows.count == 2)
        #expect(two.truncated)
        let five = try query.list(.parse(limit: 5))
        #expect(five.rows.count == 5)
        #expect(!five.truncated)
        #expect(try query.list(.parse(limit: 0)).rows.count == 5)
        #expect(try AuditFilter.parse(limit: 0).limit == nil)
        #expect(try query.list(.parse(limit: Int.max)).rows.count == 5)
    }

    @Test func forEachPairStreamsAndStopsAtTheFirstError() throws {
        struct Stop: Error {}
        let f = try Fixture()
        defer { f.remove() }
        let query = try AuditQuery(path: f.path)
        var seen: [SQLValue] = []
        try query.forEachPair(.parse(team: "ops")) { seen.append($0[0]) }
        #expect(seen == [.text(r4), .text(r5)])
        seen = []
        #expect(throws: Stop.self) {
            try query.forEachPair(AuditFilter()) { row in
                seen.append(row[0])
                if seen.count == 2 { throw Stop() }
            }
        }
        #expect(seen == [.text(r1), .text(r2)])
        // The connection is still usable afterwards.
        #expect(try query.verify().isIntact)
    }

    @Test func queryBindsEveryValue() throws {
        let filter = try AuditFilter.parse(team: "x' OR 1=1 --", status: 200, since: "2025-03-01", limit: 3)
        let (sql, parameters) = filter.query()
        #expect(!sql.contains("OR 1=1"))
        #expect(sql.hasSuffix("WHERE team = ?1 AND status = ?2 AND received_at >= ?3 ORDER BY received_at, request_id LIMIT ?4"))
        #expect(parameters == [.text("x' OR 1=1 --"), .int(200), .text("2025-03-01T00:00:00.000Z"), .int(3)])
    }

    @Test func rejectsBadValuesNamingTheOption() {
        func option(_ parse: () throws(AuditFilter.Invalid) -> AuditFilter) -> String? {
            do { _ = try parse(); return nil } catch { return error.option }
        }
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(hook: "not-a-uuid") } == "hook")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(requestID: "29dd8606-4e01-46cb-aca2-dd6022e7486") } == "request-id")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(eventRequestID: "x") } == "event-request-id")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(decision: "allowed") } == "decision")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(decision: "audit_unavailable") } == "decision")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(status: 42) } == "status")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(since: "yesterday") } == "since")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(until: "2025-03-01T25:00:00Z") } == "until")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(since: "2025-03-02", until: "2025-03-01") } == "until")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(limit: -1) } == "limit")
        #expect(option { () throws(AuditFilter.Invalid) in try .parse(team: "claims", decision: "rate_limited") } == nil)
    }
}

@Suite struct AuditTimeTests {
    @Test func convertsToTheStoredUTCForm() {
        #expect(AuditTime.storedForm("2025-03-01T09:30:00Z") == "2025-03-01T09:30:00.000Z")
        #expect(AuditTime.storedForm("2025-03-01t09:30:00.5z") == "2025-03-01T09:30:00.500Z")
        #expect(AuditTime.storedForm("2025-03-01 09:30:00.123Z") == "2025-03-01T09:30:00.123Z")
        #expect(AuditTime.storedForm("2025-03-01T00:30:00+01:00") == "2025-02-28T23:30:00.000Z")
        #expect(AuditTime.storedForm("2024-02-28T23:30:00-01:00") == "2024-02-29T00:30:00.000Z")
        #expect(AuditTime.storedForm("2024-12-31T23:59:59.9995Z") == "2025-01-01T00:00:00.000Z")
        #expect(AuditTime.storedForm("2024-02-29") == "2024-02-29T00:00:00.000Z")
        #expect(AuditTime.storedForm("1970-01-01T00:00:00Z") == "1970-01-01T00:00:00.000Z")
        #expect(AuditTime.storedForm("1969-12-31T23:59:59.999Z") == "1969-12-31T23:59:59.999Z")
    }

    @Test func rejectsWhatIsNotRFC3339() {
        for bad in ["", "2023-02-29", "2025-13-01", "2025-03-01T09:30Z", "2025-03-01T09:30:00", "2025-03-01T09:30:00.Z",
                    "2025-03-01T09:30:00+0200", "2025-03-01T09:30:00+02", "25-03-01", "2025-3-1", "2025-03-01T09:30:00Zx",
                    "0000-01-01T00:00:00+00:01", "now"] {
            #expect(AuditTime.storedForm(bad) == nil, "\(bad)")
        }
    }
}

// MARK: - Export formats

@Suite struct AuditExportTests {
    @Test func jsonLinesKeepTypes() throws {
        let f = try Fixture()
        defer { f.remove() }
        let rows = try AuditQuery(path: f.path).list(.parse(requestID: r1)).rows
        let line = AuditFormat.jsonLine(columns: AuditQuery.pairColumns, row: try #require(rows.first))
        #expect(line == #"{"request_id":"\#(r1)","received_at":"2025-03-01T09:00:00.000Z","#
            + #""completed_at":"2025-03-01T09:00:00.016Z","client_addr":"10.0.0.7","team":"claims","#
            + #""key_fingerprint":"0123456789abcdef","method":"POST","path":"/hooks/\#(hookA)/requests/\#(event1)/redeliver","#
            + #""hook_id":"\#(hookA)","event_request_id":"\#(event1)","decision":"forwarded","status":200,"#
            + #""upstream_status":200,"upstream_ms":12.5,"total_ms":15.25,"delivery_id":"d-1","event":"claim.created","#
            + #""tenant_id":"t-9","user_agent":"claims-bot/1.0","client_request_id":null,"config_version":"\#(config)"}"#)

        // Parsed back: numbers are numbers, nulls are null.
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object.count == AuditQuery.pairColumns.count)
        #expect(object["status"] as? Int == 200)
        #expect(object["total_ms"] as? Double == 15.25)
        #expect(object["status"] as? String == nil)
        #expect(object["client_request_id"] is NSNull)
    }

    @Test func jsonLinesShowMissingResponseAsNull() throws {
        let f = try Fixture()
        defer { f.remove() }
        let row = try #require(try AuditQuery(path: f.path).list(.parse(requestID: r5)).rows.first)
        let line = AuditFormat.jsonLine(columns: AuditQuery.pairColumns, row: row)
        #expect(line.contains(#""completed_at":null,"#))
        #expect(line.contains(#""decision":"forwarded","status":null,"upstream_status":null,"upstream_ms":null,"total_ms":null,"#))
        let r4row = try #require(try AuditQuery(path: f.path).list(.parse(requestID: r4)).rows.first)
        // A REAL that happens to be whole stays a JSON number.
        #expect(AuditFormat.jsonLine(columns: AuditQuery.pairColumns, row: r4row).contains(#""upstream_ms":30.0,"total_ms":40.0,"#))
    }

    @Test func csvQuotesCommasQuotesAndKeepsNullApartFromEmpty() throws {
        let f = try Fixture()
        defer { f.remove() }
        let query = try AuditQuery(path: f.path)
        #expect(AuditFormat.csvHeader(AuditQuery.pairColumns) == AuditQuery.pairColumns.joined(separator: ","))
        let r2row = try #require(try query.list(.parse(requestID: r2)).rows.first)
        #expect(AuditFormat.csvLine(r2row) == "\(r2),2025-03-01T09:30:00.000Z,2025-03-01T09:30:00.001Z,10.0.0.7,claims,"
            + "0123456789abcdef,POST,/hooks/\(hookB)/requests/\(event1)/redeliver,\(hookB),\(event1),forbidden,403,,,0.5,"
            + #",,,"curl/8, ""test""",,\#(config)"#)
        let r3row = try #require(try query.list(.parse(requestID: r3)).rows.first)
        // team null -> empty field; user_agent "" -> "".
        #expect(AuditFormat.csvLine(r3row).contains(",10.0.0.7,,,POST,"))
        #expect(AuditFormat.csvLine(r3row).contains(#","","#))
        #expect(AuditFormat.csvLine([.text("a\nb"), .text("x\r"), .int(-1), .null]) == "\"a\nb\",\"x\r\",-1,")
    }

    @Test func tableAlignsColumnsAndShowsFullIDs() throws {
        let f = try Fixture()
        defer { f.remove() }
        let rows = try AuditQuery(path: f.path).list(AuditFilter()).rows
        let lines = AuditFormat.table(rows)
        #expect(lines.count == 6)
        #expect(lines[0].hasPrefix("request_id                            received_at               team    hook_id"))
        #expect(lines[1].hasPrefix("\(r1)  2025-03-01T09:00:00.000Z  claims  \(hookA)"))
        #expect(lines[1].hasSuffix("forwarded           200              200     15.25"))
        #expect(lines[4].hasPrefix("\(r3)  2025-03-01T10:00:00.000Z  -       \(hookA)"))
        #expect(lines[5].hasSuffix("forwarded             -                -         -"))
        // Every data line is as wide as the header's columns up to the last one.
        #expect(Set(lines.map(\.count)).count == 1)
    }

    @Test func displayEscapesControlCharacters() {
        #expect(AuditFormat.display(.text("ok\u{1b}[31mred\n")) == "ok\\u{1b}[31mred\\n")
        #expect(AuditFormat.display(.null) == "-")
        #expect(AuditFormat.display(.double(3)) == "3.0")
    }
}

// MARK: - show

@Suite struct AuditShowTests {
    @Test func showsBothRecordsWithEveryColumn() throws {
        let f = try Fixture()
        defer { f.remove() }
        let pair = try #require(try AuditQuery(path: f.path).show(requestID: r1.uppercased()))
        #expect(pair.request.map(\.name) == AuditSchema.requestColumns + ["hash"])
        #expect(pair.request[column: "seq"] == .int(1))
        #expect(pair.request[column: "prev_hash"] == .text(AuditChain.genesis))
        let response = try #require(pair.response)
        #expect(response.map(\.name) == AuditSchema.responseColumns + ["hash"])
        #expect(response[column: "seq"] == .int(2))
        #expect(response[column: "upstream_body"] == .text(body1))
        #expect(response[column: "upstream_content_type"] == .text("application/json"))
        #expect(response[column: "upstream_body_bytes"] == .int(Int64(body1.utf8.count)))
        #expect(response[column: "prev_hash"] == pair.request[column: "hash"])

        let lines = AuditFormat.showLines(pair)
        #expect(lines.first == "[audit_requests]")
        #expect(lines.contains("request_id: \(r1)"))
        #expect(lines.contains("client_request_id: (null)"))
        #expect(lines.contains("[audit_responses]"))
        #expect(lines.contains("upstream_body: \(body1)"))
        #expect(lines.contains("upstream_ms: 12.5"))
    }

    @Test func showsARequestWithoutResponse() throws {
        let f = try Fixture()
        defer { f.remove() }
        let pair = try #require(try AuditQuery(path: f.path).show(requestID: r5))
        #expect(pair.response == nil)
        #expect(pair.request[column: "seq"] == .int(9))
        #expect(AuditFormat.showLines(pair).last?.hasPrefix("(no response record") == true)
        #expect(try AuditQuery(path: f.path).show(requestID: rid(0x99)) == nil)
    }

    @Test func showsABinaryBodyAsHex() {
        let line = AuditFormat.showLine(AuditField(name: "upstream_body", value: .blob([0xff, 0x00, 0x41])))
        #expect(line == "upstream_body: (3 bytes, not UTF-8) ff0041")
    }
}

// MARK: - verify and opening

@Suite struct AuditVerifyTests {
    @Test func verifiesAnIntactChain() throws {
        let f = try Fixture()
        defer { f.remove() }
        let result = try AuditQuery(path: f.path).verify()
        #expect(result == AuditVerification(records: 9, pairs: 4, incomplete: 1, broken: nil, derivedThrough: 0, lastSeq: 9, lastHash: f.writer.head))
        #expect(try AuditQuery(path: f.path).hash(seq: 9) == f.writer.head)
        #expect(try AuditQuery(path: f.path).hash(seq: 10) == nil)
    }

    @Test func namesAnEditedRecord() throws {
        let f = try Fixture()
        defer { f.remove() }
        try f.tamper("UPDATE audit_responses SET status = 200 WHERE request_id = '\(r4)'")
        let result = try AuditQuery(path: f.path).verify()
        #expect(result.broken == "record seq 7 (audit_responses, request_id \(r4)): hash does not match its content (the record was edited)")
        #expect(result.records == 6)
    }

    @Test func namesTheRecordAfterADeletedOne() throws {
        let f = try Fixture()
        defer { f.remove() }
        try f.tamper("DELETE FROM audit_responses WHERE request_id = '\(r2)'")
        let result = try AuditQuery(path: f.path).verify()
        #expect(result.broken == "record seq 5 (audit_requests, request_id \(r3)): expected seq 4: a record before it was deleted")
    }

    @Test func namesSwappedRecords() throws {
        let f = try Fixture()
        defer { f.remove() }
        // r1's and r2's request records trade places in the chain.
        try f.tamper("""
            UPDATE audit_requests SET seq = -1 WHERE seq = 1;
            UPDATE audit_requests SET seq = 1 WHERE seq = 3;
            UPDATE audit_requests SET seq = 3 WHERE seq = -1;
            """)
        let result = try AuditQuery(path: f.path).verify()
        #expect(result.broken?.hasPrefix("record seq 1 (audit_requests, request_id \(r2)): prev_hash does not match") == true)
    }

    @Test func namesAnInsertedRecord() throws {
        let f = try Fixture()
        defer { f.remove() }
        // A forged record with a valid-looking link but no correct hash, slotted in as seq 10.
        try f.tamper("""
            INSERT INTO audit_requests (seq, request_id, received_at, client_addr, method, path, decision, config_version, prev_hash, hash)
            VALUES (10, '\(rid(0x42))', '2025-03-02T00:00:01.000Z', '10.0.0.8', 'POST', '/', 'forwarded', '\(config)',
                    '\(f.writer.head)', '\(String(repeating: "1", count: 64))')
            """)
        let result = try AuditQuery(path: f.path).verify()
        #expect(result.broken == "record seq 10 (audit_requests, request_id \(rid(0x42))): hash does not match its content (the record was edited)")
    }

    @Test func namesAResponseWhoseRequestComesLaterOrNever() throws {
        let f = try Fixture()
        defer { f.remove() }
        // Correctly chained and hashed, but the response is recorded before its request.
        try f.writer.append(response(rid(0x30), at: "2025-03-02T02:00:00.010Z", decision: .forwarded, status: 200, totalMs: 6))
        try f.writer.append(request(rid(0x30), at: "2025-03-02T02:00:00.000Z", team: "ops", hook: hookA, decision: .forwarded))
        let result = try AuditQuery(path: f.path).verify()
        #expect(result.broken == "record seq 10 (audit_responses, request_id \(rid(0x30))): response without an earlier request record")

        let g = try Fixture()
        defer { g.remove() }
        try g.writer.append(response(rid(0x31), at: "2025-03-02T02:00:00.010Z", decision: .forwarded, status: 200, totalMs: 6))
        #expect(try AuditQuery(path: g.path).verify().broken
            == "record seq 10 (audit_responses, request_id \(rid(0x31))): response without an earlier request record")
    }

    /// `verify` hashes stored columns' bytes; the writer hashes values. The two encodings must
    /// agree for every storage class, or a verify would call an intact record edited.
    @Test func hashingStoredColumnsEqualsHashingTheirValues() throws {
        let dir = TestDirectory.make("chain-encoding")
        let db = try SQLiteConnection(path: dir + "/t.sqlite3")
        try db.execute("CREATE TABLE t (a, b, c, d, e, f, g, h, i, j)")
        let values: [SQLValue] = [.null, .int(-42), .int(Int64.max), .double(-0.5), .double(1e300), .text(""),
                                  .text("é\u{0}\u{1F600}"), .blob([]), .blob([0, 255, 7]), .text(String(repeating: "x", count: 70_000))]
        try db.prepare("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").run(values)
        let row = try db.prepare("SELECT * FROM t")
        #expect(try row.step())
        var fromColumns: [UInt8] = []
        for i in 0..<values.count { AuditChain.appendColumn(i, of: row, to: &fromColumns) }
        var fromValues: [UInt8] = []
        _ = AuditChain.hash(table: "", values: values, context: nil, buffer: &fromValues)
        let prefix = AuditChain.domain.count + 1 + 8  // the domain, then the empty table name's tag and length
        #expect(Array(fromValues.dropFirst(prefix)) == fromColumns)
        #expect(fromColumns.count > 70_000)
    }

    @Test func verifiesABodyHoldingANulByte() throws {
        let f = try Fixture()
        defer { f.remove() }
        try f.writer.append(request(rid(0x20), at: "2025-03-02T01:00:00.000Z", team: "ops", hook: hookA, decision: .forwarded))
        try f.writer.append(response(rid(0x20), at: "2025-03-02T01:00:00.010Z", decision: .forwarded, status: 200, upstream: 200,
                                     upstreamMs: 5, totalMs: 6, body: "a\u{0}b"))
        let query = try AuditQuery(path: f.path)
        #expect(try query.verify().broken == nil)
        #expect(try query.show(requestID: rid(0x20))?.response?[column: "upstream_body"] == .text("a\u{0}b"))
    }

    @Test func readsWhileTheWriterHoldsATransaction() throws {
        let f = try Fixture()
        defer { f.remove() }
        try f.writer.db.execute("BEGIN IMMEDIATE")
        try f.writer.append(request(rid(0x30), at: "2025-03-03T00:00:00.000Z", team: "ops", hook: hookA, decision: .forwarded))
        let query = try AuditQuery(path: f.path)
        #expect(try query.verify().records == 9)
        #expect(try query.list(AuditFilter()).rows.count == 5)
        try f.writer.db.execute("COMMIT")
        #expect(try query.verify() == AuditVerification(records: 10, pairs: 4, incomplete: 2, broken: nil, derivedThrough: 0, lastSeq: 10,
                                                      lastHash: f.writer.head))
    }

    @Test func refusesAMissingFileWithoutCreatingIt() throws {
        let dir = URL(fileURLWithPath: TestDirectory.make("audit"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("none.sqlite3").path
        #expect(throws: AuditQueryError.self) { try AuditQuery(path: missing) }
        #expect(!FileManager.default.fileExists(atPath: missing))

        let other = dir.appendingPathComponent("other.sqlite3").path
        try SQLiteConnection(path: other).execute("CREATE TABLE t (x)")
        do {
            _ = try AuditQuery(path: other)
            Issue.record("opened a database without the audit schema")
        } catch {
            #expect(error.description == "\(other): not a Hookgate audit database (no audit_requests, audit_responses and audit_pairs)")
        }
        let text = dir.appendingPathComponent("notes.txt").path
        try Data(String(repeating: "not a database\n", count: 100).utf8).write(to: URL(fileURLWithPath: text))
        do {
            _ = try AuditQuery(path: text)
            Issue.record("opened a text file")
        } catch {
            #expect(error.description == "\(text): not a Hookgate audit database (not an SQLite database)")
        }
    }
}

// MARK: - Schema

@Suite struct AuditSchemaTests {
    private func indexes(_ db: SQLiteConnection) throws -> [String] {
        let s = try db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name")
        var names: [String] = []
        while try s.step() { names.append(s.text(0) ?? "") }
        return names
    }

    @Test func migratesAVersion1FileAndKeepsItsRecords() throws {
        let dir = URL(fileURLWithPath: TestDirectory.make("audit"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("audit.sqlite3").path
        // One chained pair, then the file turned back into what the version-1 gateway left:
        // the index it had and user_version 1.
        do {
            let writer = try ChainWriter(path: path)
            try writer.append(request(r1, at: "2025-03-01T09:00:00.000Z", team: "claims", hook: hookA, decision: .forwarded))
            try writer.append(response(r1, at: "2025-03-01T09:00:00.120Z", decision: .forwarded, status: 200, upstream: 200,
                                       upstreamMs: 80, totalMs: 120, body: body1))
            try writer.db.execute("""
                DROP VIEW audit_daily; DROP VIEW audit_daily_hooks; DROP TABLE audit_event_lookup; DROP TABLE audit_summary_hooks;
                DROP TABLE audit_summary_teams; DROP TABLE audit_batches;
                CREATE INDEX audit_requests_event_request ON audit_requests(event_request_id)
                """)
            try writer.db.execute("PRAGMA user_version = 1")
            writer.db.close()
        }
        let db = try AuditSchema.openForWriting(path: path, durability: .normal, busyTimeoutMs: 1000)
        #expect(try db.scalarInt("PRAGMA user_version") == AuditSchema.version)
        #expect(try indexes(db) == ["audit_checkpoints_seq", "audit_requests_hook", "audit_requests_received_at", "audit_requests_team",
                                    "audit_responses_decision", "audit_responses_status"])
        // The migration derived the summaries and the lookup from the records.
        #expect(try AuditDerived.watermark(db) == 2)
        #expect(try db.scalarInt("SELECT count(*) FROM audit_event_lookup") == 1)
        #expect(try db.scalarInt("SELECT sum(calls) FROM audit_summary_hooks WHERE status = 200 AND decision = 'forwarded'") == 1)
        #expect(try db.scalarInt("SELECT sum(calls) FROM audit_daily WHERE status = 200 AND decision = 'forwarded'") == 1)
        let query = try AuditQuery(path: path)
        #expect(try query.verify().pairs == 1)
        let rows = try query.list(.parse(eventRequestID: event1)).rows
        #expect(rows.map { $0[0] } == [.text(r1)])
    }

    @Test func refusesAFileFromANewerGateway() throws {
        let dir = URL(fileURLWithPath: TestDirectory.make("audit"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("audit.sqlite3").path
        try SQLiteConnection(path: path).execute("PRAGMA user_version = \(AuditSchema.version + 1)")
        do {
            _ = try AuditSchema.openForWriting(path: path, durability: .normal, busyTimeoutMs: 1000)
            Issue.record("opened a file with a newer schema")
        } catch {
            #expect(error.message == "audit database schema \(AuditSchema.version + 1) is newer than this gateway's (\(AuditSchema.version))")
        }
    }
}

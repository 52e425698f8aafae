// Threads: the audit writer thread (hashing) and the CLI (`audit verify`); pure but for the SQLite reads.

/// The hash chain over audit records. Every record (request or response) takes the next
/// `seq` and stores `prev_hash` (the previous record's hash; 64 zeros for the first) and
/// `hash` = SHA-256 of its canonical content: a domain tag, the table name, then each column of
/// `AuditSchema.*Columns` (seq and prev_hash included) as a type tag, a big-endian length and
/// the bytes. Editing, deleting, inserting or reordering any record breaks the chain.
package enum AuditChain {
    package static let genesis = String(repeating: "0", count: 64)
    static let domain = Array("hookgate-audit-chain-v1".utf8)

    package static func hash(table: String, values: [SQLValue], context: SHA256Context? = nil) -> String {
        var bytes = [UInt8]()
        return hash(table: table, values: values, context: context, buffer: &bytes)
    }

    /// The same, building the hashed bytes in `buffer` (emptied first; a writer reuses one).
    static func hash(table: String, values: [SQLValue], context: SHA256Context?, buffer bytes: inout [UInt8]) -> String {
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(1024)
        bytes.append(contentsOf: domain)
        appendField(.text(table), to: &bytes)
        for v in values { appendField(v, to: &bytes) }
        return context?.hex(bytes) ?? SHA256.hex(bytes: bytes)
    }

    private static func appendBigEndian(_ value: UInt64, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { out.append(contentsOf: $0) }
    }

    private static func appendField(_ value: SQLValue, to out: inout [UInt8]) {
        switch value {
        case .null:
            out.append(0)
        case .int(let v):
            out.append(1)
            appendBigEndian(8, to: &out)
            appendBigEndian(UInt64(bitPattern: v), to: &out)
        case .double(let d):
            out.append(2)
            appendBigEndian(8, to: &out)
            appendBigEndian(d.bitPattern, to: &out)
        case .text(let s):
            out.append(3)
            appendBigEndian(UInt64(s.utf8.count), to: &out)
            out.appendUTF8(s)
        case .blob(let b):
            out.append(4)
            appendBigEndian(UInt64(b.count), to: &out)
            out.append(contentsOf: b)
        }
    }

    /// The outcome of `hookgate audit verify`.
    public struct Report: Sendable, Equatable {
        public var records: Int
        public var pairs: Int
        public var incomplete: Int
        /// nil when the chain is whole; else the first record that breaks it and why.
        public var broken: String?
    }

    /// Walks both tables in `seq` order and checks every link and hash.
    package static func verify(_ db: SQLiteConnection) throws(AuditError) -> Report {
        let q = try db.prepare("SELECT \(AuditSchema.requestColumns.joined(separator: ", ")), hash FROM audit_requests ORDER BY seq")
        let r = try db.prepare("SELECT \(AuditSchema.responseColumns.joined(separator: ", ")), hash FROM audit_responses ORDER BY seq")
        var nextQ = try row(q, width: AuditSchema.requestColumns.count)
        var nextR = try row(r, width: AuditSchema.responseColumns.count)
        var expectedSeq: Int64 = 1
        var previous = genesis
        var records = 0, responses = 0, requests = 0
        var requestIDs = Set<String>()
        while nextQ != nil || nextR != nil {
            let takeRequest: Bool
            switch (nextQ, nextR) {
            case (let a?, let b?): takeRequest = a.seq < b.seq
            case (.some, nil): takeRequest = true
            default: takeRequest = false
            }
            let rec = takeRequest ? nextQ! : nextR!
            let table = takeRequest ? "audit_requests" : "audit_responses"
            let label = "record seq \(rec.seq) (\(table), request_id \(rec.requestID))"
            func broken(_ why: String) -> Report {
                Report(records: records, pairs: responses, incomplete: requests - responses, broken: "\(label): \(why)")
            }
            if rec.seq != expectedSeq {
                return broken(rec.seq > expectedSeq
                    ? "expected seq \(expectedSeq): a record before it was deleted"
                    : "seq \(rec.seq) out of order")
            }
            if rec.prevHash != previous {
                return broken("prev_hash does not match the previous record's hash (a record was removed, inserted or reordered)")
            }
            let computed = hash(table: table, values: rec.values)
            if computed != rec.hash {
                return broken("hash does not match its content (the record was edited)")
            }
            if takeRequest {
                requestIDs.insert(rec.requestID)
                requests += 1
                nextQ = try row(q, width: AuditSchema.requestColumns.count)
            } else {
                guard requestIDs.contains(rec.requestID) else {
                    return broken("response without an earlier request record")
                }
                responses += 1
                nextR = try row(r, width: AuditSchema.responseColumns.count)
            }
            previous = rec.hash
            expectedSeq += 1
            records += 1
        }
        return Report(records: records, pairs: responses, incomplete: requests - responses, broken: nil)
    }

    private struct Row {
        var seq: Int64
        var requestID: String
        var prevHash: String
        var hash: String
        var values: [SQLValue]
    }

    private static func row(_ s: SQLiteStatement, width: Int) throws(AuditError) -> Row? {
        guard try s.step() else { return nil }
        var values: [SQLValue] = []
        values.reserveCapacity(width)
        for i in 0..<width { values.append(s.value(i)) }
        let seq: Int64
        if case .int(let v) = values[0] { seq = v } else { seq = -1 }
        let requestID: String
        if case .text(let t) = values[1] { requestID = t } else { requestID = "?" }
        let prevHash: String
        if case .text(let t) = values[width - 1] { prevHash = t } else { prevHash = "" }
        return Row(seq: seq, requestID: requestID, prevHash: prevHash, hash: s.text(width) ?? "", values: values)
    }
}

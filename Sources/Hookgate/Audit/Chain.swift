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
    package static func hash(table: String, values: [SQLValue], context: SHA256Context?, buffer bytes: inout [UInt8]) -> String {
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(1024)
        bytes.append(contentsOf: domain)
        appendField(.text(table), to: &bytes)
        for v in values { appendField(v, to: &bytes) }
        return context?.hex(bytes) ?? SHA256.hex(bytes: bytes)
    }

    private static func appendBigEndian(_ value: UInt64, to out: inout [UInt8]) {
        // Eight single-byte appends: cheaper than a generic copy of 8 bytes.
        var shift = 56
        while shift >= 0 {
            out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
            shift -= 8
        }
    }

    // The canonical encoding of one field: a type tag (0 null, 1 integer, 2 real, 3 text,
    // 4 blob), then for all but null a big-endian length and the bytes. Written once for values
    // (the writer) and once for stored columns (verify); a unit test keeps the two equal.

    private static func appendField(_ value: SQLValue, to out: inout [UInt8]) {
        switch value {
        case .null:
            out.append(0)
        case .int(let v):
            appendInteger(v, to: &out)
        case .double(let d):
            appendReal(d, to: &out)
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

    /// The same encoding, straight from a stored column's bytes (no String or Array made).
    static func appendColumn(_ i: Int, of row: SQLiteStatement, to out: inout [UInt8]) {
        let column = row.raw(i)
        switch column.type {
        case .null:
            out.append(0)
        case .int:
            appendInteger(column.int, to: &out)
        case .double:
            appendReal(column.double, to: &out)
        case .text, .blob:
            out.append(column.type == .blob ? 4 : 3)
            appendBigEndian(UInt64(column.bytes.count), to: &out)
            if let base = column.bytes.baseAddress {
                out.append(contentsOf: UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: column.bytes.count))
            }
        }
    }

    private static func appendInteger(_ v: Int64, to out: inout [UInt8]) {
        out.append(1)
        appendBigEndian(8, to: &out)
        appendBigEndian(UInt64(bitPattern: v), to: &out)
    }

    private static func appendReal(_ d: Double, to out: inout [UInt8]) {
        out.append(2)
        appendBigEndian(8, to: &out)
        appendBigEndian(d.bitPattern, to: &out)
    }

    /// The outcome of `hookgate audit verify`.
    public struct Report: Sendable, Equatable {
        public var records: Int
        public var pairs: Int
        public var incomplete: Int
        /// nil when the chain is whole; else the first record that breaks it and why.
        public var broken: String?
        /// In a file that continues another (rotation): the request ids of responses whose
        /// request record is in an earlier file (calls in flight when it rotated).
        public var responsesToEarlierFile: [String] = []
    }

    /// Walks both tables in `seq` order (a merge of two ordered cursors) and checks every link
    /// and hash. Runs in constant memory whatever the file's size: the previous record's hash is
    /// all it carries from one record to the next, and a response's request is looked up with the
    /// response (its seq must be lower). Columns are hashed from SQLite's bytes as stored.
    /// `progress` is called every `progressEvery` records with (records checked, records in all).
    /// `start`: the first record's seq and the hash it continues (a rotated file's `audit_file`).
    package static func verify(_ db: SQLiteConnection, start: (seq: Int64, prevHash: String) = (1, genesis), progressEvery: Int = 1 << 16,
                               progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws(AuditError) -> Report {
        let requestWidth = AuditSchema.requestColumns.count, responseWidth = AuditSchema.responseColumns.count
        let q = try db.prepare("SELECT \(AuditSchema.requestColumns.joined(separator: ", ")), hash FROM audit_requests ORDER BY seq")
        // The request's seq comes with each response (one probe of request_id's unique index).
        let r = try db.prepare("""
            SELECT \(AuditSchema.responseColumns.map { "r.\($0)" }.joined(separator: ", ")), r.hash, q.seq
              FROM audit_responses r LEFT JOIN audit_requests q ON q.request_id = r.request_id
             ORDER BY r.seq
            """)
        var total = 0
        if progress != nil {
            total = Int(try db.scalarInt("SELECT max(COALESCE((SELECT max(seq) FROM audit_requests), 0), "
                                         + "COALESCE((SELECT max(seq) FROM audit_responses), 0))") ?? 0) - Int(start.seq - 1)
        }
        var hasRequest = try q.step(), hasResponse = try r.step()
        var expectedSeq = start.seq
        var previous = Array(start.prevHash.utf8)
        var computed = [UInt8](repeating: 0, count: 64)
        var buffer = [UInt8]()
        buffer.reserveCapacity(4096)
        let context = SHA256Context()
        let requestTag = tableTag("audit_requests"), responseTag = tableTag("audit_responses")
        var records = 0, responses = 0, requests = 0
        var carried: [String] = []
        while hasRequest || hasResponse {
            let takeRequest = hasRequest && (!hasResponse || q.int(0) < r.int(0))
            let row = takeRequest ? q : r
            let width = takeRequest ? requestWidth : responseWidth
            let seq = row.int(0)
            func broken(_ why: String) -> Report {
                let table = takeRequest ? "audit_requests" : "audit_responses"
                return Report(records: records, pairs: responses, incomplete: requests - responses,
                              broken: "record seq \(seq) (\(table), request_id \(row.text(1) ?? "?")): \(why)")
            }
            if seq != expectedSeq {
                return broken(seq > expectedSeq
                    ? "expected seq \(expectedSeq): a record before it was deleted"
                    : "seq \(seq) out of order")
            }
            if !row.bytesEqual(width - 1, previous) {
                return broken("prev_hash does not match the previous record's hash (a record was removed, inserted or reordered)")
            }
            buffer.removeAll(keepingCapacity: true)
            buffer.append(contentsOf: takeRequest ? requestTag : responseTag)
            for i in 0..<width { appendColumn(i, of: row, to: &buffer) }
            context.hex(buffer, into: &computed)
            if !row.bytesEqual(width, computed) {
                return broken("hash does not match its content (the record was edited)")
            }
            if takeRequest {
                requests += 1
                hasRequest = try q.step()
            } else {
                if row.raw(width + 1).type == .int, row.int(width + 1) < seq {
                    responses += 1
                } else if row.raw(width + 1).type == .null, start.seq > 1, carried.count < Self.maxCarried, let id = row.text(1) {
                    carried.append(id)
                } else {
                    return broken("response without an earlier request record")
                }
                hasResponse = try r.step()
            }
            swap(&previous, &computed)
            expectedSeq += 1
            records += 1
            if let progress, records % progressEvery == 0 { progress(records, total) }
        }
        return Report(records: records, pairs: responses, incomplete: requests - responses, broken: nil, responsesToEarlierFile: carried)
    }

    /// Responses in one file whose request is in the file before: at most the calls in flight
    /// at a rotation (bounded by limits.max_connections); more means a broken file.
    static let maxCarried = 1 << 20

    /// The hashed bytes every record of `table` starts with: the domain, then the table's name.
    private static func tableTag(_ table: String) -> [UInt8] {
        var bytes = domain
        appendField(.text(table), to: &bytes)
        return bytes
    }
}

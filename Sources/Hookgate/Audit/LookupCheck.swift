// Threads: the CLI (`audit verify`), inside the verify's read transaction.

/// Checks `audit_event_lookup` against the records while `AuditChain.verify` streams them, batch
/// by batch (`audit_batches`): the batches must follow each other without gap or overlap from
/// seq 1, and each batch's lookup rows must be exactly the (Hookshot request id, seq) of its
/// request records that name one. Memory: one batch's ids at a time (a writer batch holds some
/// 16 k; a rebuild batch at most half a million).
final class LookupCheck {
    private typealias Entry = (high: UInt64, low: UInt64, text: String?, seq: Int64)

    private let batches: SQLiteStatement
    private let rows: SQLiteStatement
    private var current: (first: Int64, last: Int64)?
    private var nextFirst: Int64 = 1
    private var expected: [Entry] = []
    private var lastSeen: Int64 = 0

    init(_ db: SQLiteConnection) throws(AuditError) {
        batches = try db.prepare("SELECT first_seq, last_seq FROM audit_batches ORDER BY first_seq")
        rows = try db.prepare("SELECT event_key, seq FROM audit_event_lookup WHERE bucket = ?1 ORDER BY event_key, seq")
        // A file a rotation started holds batches from its first record on.
        nextFirst = try AuditSegment.read(db).firstSeq
        current = try nextBatch()
    }

    deinit {
        batches.reset()
        rows.reset()
    }

    /// A request record (columns of `AuditSchema.requestColumns`); the first disagreement, or nil.
    func request(seq: Int64, row: SQLiteStatement) throws(AuditError) -> String? {
        lastSeen = seq
        while let batch = current, seq > batch.last {
            if let mismatch = try finish(batch) { return mismatch }
        }
        guard current != nil else { return nil }
        let id = row.raw(9)
        guard id.type == .text || id.type == .blob else { return nil }
        if let (high, low) = UUIDText.bits(id.bytes) {
            expected.append((high, low, nil, seq))
        } else {
            expected.append((0, 0, String(decoding: id.bytes, as: UTF8.self), seq))
        }
        return nil
    }

    /// After the last record (`lastSeq`): no batch may cover records beyond it.
    func finish(lastSeq: Int64) throws(AuditError) -> String? {
        lastSeen = lastSeq
        while let batch = current {
            if batch.last > lastSeq {
                return "audit_batches: the batch at seq \(batch.first) covers records up to seq \(batch.last), "
                    + "but the last record is seq \(lastSeq)"
            }
            if let mismatch = try finish(batch) { return mismatch }
        }
        return nil
    }

    /// A 16-byte key as two big-endian halves.
    private static func bits(_ b: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        var high: UInt64 = 0, low: UInt64 = 0
        for i in 0..<8 {
            high = high << 8 | UInt64(b[i])
            low = low << 8 | UInt64(b[8 + i])
        }
        return (high, low)
    }

    private func nextBatch() throws(AuditError) -> (first: Int64, last: Int64)? {
        guard try batches.step() else { return nil }
        return (batches.int(0), batches.int(1))
    }

    private func finish(_ batch: (first: Int64, last: Int64)) throws(AuditError) -> String? {
        defer { expected.removeAll(keepingCapacity: true) }
        guard batch.first == nextFirst, batch.last >= batch.first else {
            return "audit_batches: the batch starting at seq \(batch.first) should start at seq \(nextFirst) "
                + "and end at or after it (it ends at \(batch.last))"
        }
        nextFirst = batch.last + 1
        // SQLite's order: text keys before blobs, each by bytes; then seq.
        expected.sort { a, b in
            switch (a.text, b.text) {
            case (let x?, let y?): return x == y ? a.seq < b.seq : x.utf8.lexicographicallyPrecedes(y.utf8)
            case (.some, nil): return true
            case (nil, .some): return false
            case (nil, nil): return (a.high, a.low, a.seq) < (b.high, b.low, b.seq)
            }
        }
        try rows.bind([.int(batch.first)])
        defer { rows.reset() }
        var i = 0
        while try rows.step() {
            let key = rows.raw(0), seq = rows.int(1)
            guard i < expected.count else {
                return "audit_event_lookup has a row for request seq \(seq) in the batch at seq \(batch.first) that no record holds"
            }
            let e = expected[i]
            let same: Bool
            if let text = e.text {
                same = key.type == .text && key.bytes.elementsEqual(text.utf8)
            } else {
                same = key.type == .blob && key.bytes.count == 16 && Self.bits(key.bytes) == (e.high, e.low)
            }
            guard same, seq == e.seq else {
                return "audit_event_lookup disagrees with the records in the batch at seq \(batch.first): "
                    + "expected request seq \(e.seq), found a row for seq \(seq)"
            }
            i += 1
        }
        if i < expected.count {
            return "audit_event_lookup misses request seq \(expected[i].seq) in the batch at seq \(batch.first)"
        }
        current = try nextBatch()
        return nil
    }
}

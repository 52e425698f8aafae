import Foundation

// Threads: whoever holds the connection (the audit writer, the shipper, a CLI command); values.

/// What one audit file says about its place in the chain (the `audit_file` row, schema 5):
/// where its records start, the hash they continue, and, once rotated, where they end and the
/// name the file was given. A file from before schema 5 (or without the row) starts at seq 1.
package struct AuditSegment: Sendable, Equatable {
    package var firstSeq: Int64 = 1
    package var prevHash: String = AuditChain.genesis
    /// The hash of record seq 1 (nil: not yet known, in a first file with no records).
    package var chain: String?
    package var startedAt: String?
    package var previousFile: String?
    package var sealedAt: String?
    package var lastSeq: Int64?
    package var lastHash: String?
    package var archivedAs: String?

    package var isSealed: Bool { sealedAt != nil }

    /// The row of `db` (inside the caller's transaction, if any).
    package static func read(_ db: SQLiteConnection) throws(AuditError) -> AuditSegment {
        guard try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_file'") == 1 else {
            return AuditSegment()
        }
        let row = try db.prepare("""
            SELECT first_seq, prev_hash, chain, started_at, previous_file, sealed_at, last_seq, last_hash, archived_as
              FROM audit_file WHERE id = 1
            """)
        defer { row.reset() }
        guard try row.step() else { return AuditSegment() }
        return AuditSegment(firstSeq: row.int(0), prevHash: row.text(1) ?? AuditChain.genesis, chain: row.text(2),
                            startedAt: row.text(3), previousFile: row.text(4), sealedAt: row.text(5),
                            lastSeq: row.isNull(6) ? nil : row.int(6), lastHash: row.text(7), archivedAs: row.text(8))
    }

    /// The chain's name: carried in the row, else the hash of record seq 1 in this file.
    package static func chainID(_ db: SQLiteConnection, _ segment: AuditSegment) throws(AuditError) -> String? {
        if let chain = segment.chain { return chain }
        let first = try db.prepare("SELECT hash FROM audit_requests WHERE seq = 1 UNION ALL SELECT hash FROM audit_responses WHERE seq = 1")
        defer { first.reset() }
        return try first.step() ? first.text(0) : nil
    }

    /// The name a rotated file gets beside `path`: its stem, first and last seq (12 digits, so
    /// that names sort in chain order) and the UTC day it was closed, then its extension:
    /// `audit.sqlite3` → `audit-000000000001-000000052341-20261201.sqlite3`.
    package static func archiveName(path: String, first: Int64, last: Int64, day: String) -> String {
        let name = (path as NSString).lastPathComponent
        let ext = (name as NSString).pathExtension
        let stem = ext.isEmpty ? name : (name as NSString).deletingPathExtension
        func padded(_ n: Int64) -> String {
            let digits = String(n)
            return String(repeating: "0", count: max(0, 12 - digits.count)) + digits
        }
        let compactDay = day.filter { $0 != "-" }
        return "\(stem)-\(padded(first))-\(padded(last))-\(compactDay)" + (ext.isEmpty ? "" : ".\(ext)")
    }
}

/// The rotated files beside the live audit file, found by their names (`AuditSegment.archiveName`):
/// what the shipper reads while it is behind the live file.
package enum AuditRotatedFiles {
    /// The file holding record `seq`: the live one when it starts at or before `seq` (or holds
    /// nothing yet), else the rotated file whose name's range holds it. `last`: a rotated file's
    /// last record (nil for the live file).
    package static func holding(seq: Int64, live: String) throws(AuditError) -> (path: String, last: Int64?) {
        let liveStart = try AuditSegment.read(SQLiteConnection(path: live, readOnly: true)).firstSeq
        if seq >= liveStart { return (live, nil) }
        let directory = (live as NSString).deletingLastPathComponent
        let name = (live as NSString).lastPathComponent
        let ext = (name as NSString).pathExtension
        let stem = ext.isEmpty ? name : (name as NSString).deletingPathExtension
        for candidate in (try? FileManager.default.contentsOfDirectory(atPath: directory.isEmpty ? "." : directory)) ?? [] {
            guard let range = range(of: candidate, stem: stem, ext: ext), range.contains(seq) else { continue }
            return ((directory as NSString).appendingPathComponent(candidate), range.upperBound)
        }
        throw AuditError(.other, message: "no rotated audit file beside \(live) holds record \(seq) (moved away before it was shipped?)")
    }

    /// The records a rotated file's name says it holds, if it is one of `stem`'s.
    static func range(of name: String, stem: String, ext: String) -> ClosedRange<Int64>? {
        let suffix = ext.isEmpty ? "" : "." + ext
        guard name.hasPrefix(stem + "-"), name.hasSuffix(suffix) else { return nil }
        let middle = name.dropFirst(stem.count + 1).dropLast(suffix.count).split(separator: "-")
        guard middle.count == 3, middle[0].count == 12, middle[1].count == 12, middle[2].count == 8,
              let first = Int64(middle[0]), let last = Int64(middle[1]), first <= last else { return nil }
        return first...last
    }
}

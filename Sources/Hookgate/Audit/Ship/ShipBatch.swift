import Foundation

// Threads: one thread at a time (the shipper's, or a CLI command); never the loop.

/// The records of one local audit file with `seq` in `(after, through]`, read in one SQLite
/// read transaction and written to PostgreSQL in one transaction (COPY into both tables):
/// all of the range or none of it.
package struct ShipBatch {
    let after: Int64
    let through: Int64
    private(set) var requestRows: [UInt8] = []
    private(set) var responseRows: [UInt8] = []
    /// `seq` → `hash` of every record of the range, for the conflict check.
    private(set) var hashes: [Int64: (table: String, hash: String)] = [:]
    var count: Int { hashes.count }
    /// The COPY data's size (what the batch holds in memory).
    var bytes: Int { requestRows.count + responseRows.count }

    /// Reads the range from `source` (a read-only connection to the local file).
    init(source: SQLiteConnection, replica: String, after: Int64, through: Int64) throws(AuditError) {
        self.after = after
        self.through = through
        let escapedReplica = Self.field(.text(replica))
        for (table, columns) in [("audit_requests", AuditSchema.requestColumns), ("audit_responses", AuditSchema.responseColumns)] {
            let statement = try source.prepare(
                "SELECT \(columns.joined(separator: ", ")), hash FROM \(table) WHERE seq > ?1 AND seq <= ?2 ORDER BY seq")
            try statement.bind([.int(after), .int(through)])
            let bodyColumn = columns.firstIndex(of: "upstream_body")
            while try statement.step() {
                var line = escapedReplica
                var bodyIsText: SQLValue = .null
                for i in 0..<columns.count {
                    line.append(0x09)
                    var value = statement.value(i)
                    if i == bodyColumn {
                        switch value {
                        case .text(let s):
                            value = .blob(Array(s.utf8))
                            bodyIsText = .int(1)
                        case .blob: bodyIsText = .int(0)
                        default: break
                        }
                    }
                    line += Self.field(value)
                }
                let hash = statement.text(columns.count) ?? ""
                line.append(0x09)
                line += Self.field(.text(hash))
                if bodyColumn != nil {
                    line.append(0x09)
                    line += bodyIsText == .null ? Array("\\N".utf8) : Array((bodyIsText == .int(1) ? "t" : "f").utf8)
                }
                line.append(0x0a)
                if table == "audit_requests" { requestRows += line } else { responseRows += line }
                hashes[statement.int(0)] = (table, hash)
            }
        }
    }

    /// Writes the batch in one transaction. A record of the range already there (a unique
    /// violation) is checked against the local one: all equal means another shipper (a
    /// `hookgate audit ship` by hand) got there first and nothing is lost; any difference
    /// throws `ShipConflict`.
    func write(to pg: PostgresConnection, replica: String) throws -> Int {
        guard count > 0 else { return 0 }
        do {
            try pg.execute("BEGIN")
            try pg.copy(into: "audit_requests", columns: CentralAudit.requestCopyColumns, data: requestRows)
            try pg.copy(into: "audit_responses", columns: CentralAudit.responseCopyColumns, data: responseRows)
            try pg.execute("COMMIT")
            return count
        } catch where error.isUniqueViolation {
            _ = try? pg.execute("ROLLBACK")
            try checkAgainst(pg, replica: replica)
            return 0
        } catch {
            _ = try? pg.execute("ROLLBACK")
            throw error
        }
    }

    /// Every record of the range that PostgreSQL holds must equal the local one (by hash).
    func checkAgainst(_ pg: PostgresConnection, replica: String) throws {
        for table in ["audit_requests", "audit_responses"] {
            let rows = try pg.execute("SELECT seq, hash FROM \(table) WHERE replica = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                                      [replica, String(after), String(through)])
            for row in rows {
                guard let seqText = row[0], let seq = Int64(seqText) else { continue }
                guard let local = hashes[seq], local.table == table, local.hash == row[1] else {
                    throw ShipConflict(replica: replica, table: table, seq: seq)
                }
            }
        }
    }

    // MARK: - COPY's text format

    /// One field: `\N` for null; text with backslash, tab, newline and carriage return escaped;
    /// bytes as `\\x` and hex (bytea's input, its backslash escaped for COPY).
    static func field(_ value: SQLValue) -> [UInt8] {
        switch value {
        case .null: return Array("\\N".utf8)
        case .int(let v): return Array(String(v).utf8)
        case .double(let d): return Array("\(d)".utf8)
        case .text(let s):
            var out: [UInt8] = []
            out.reserveCapacity(s.utf8.count)
            for b in s.utf8 {
                switch b {
                case 0x5c: out += [0x5c, 0x5c]
                case 0x09: out += [0x5c, 0x74]
                case 0x0a: out += [0x5c, 0x6e]
                case 0x0d: out += [0x5c, 0x72]
                default: out.append(b)
                }
            }
            return out
        case .blob(let bytes):
            return Array("\\\\x".utf8) + Array(Hex.encode(bytes).utf8)
        }
    }
}

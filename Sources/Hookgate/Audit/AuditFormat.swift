// Threads: any (pure renderers; the `audit` commands).

/// How `hookgate audit` renders audit rows: JSON lines, CSV, an aligned table, and
/// `name: value` lines. Pure functions over `SQLValue`s, so tests check them directly.
public enum AuditFormat {
    // MARK: JSON lines

    /// One JSON object: `columns` as keys in order; INTEGER as a JSON integer, REAL as a JSON
    /// number (non-finite as null), NULL as null, TEXT as a string; a BLOB as a string (its
    /// text when UTF-8, else lower-case hex).
    public static func jsonLine(columns: [String], row: [SQLValue]) -> String {
        var out = "{"
        for (i, name) in columns.enumerated() {
            if i > 0 { out += "," }
            JSON.appendString(name, to: &out)
            out += ":"
            switch i < row.count ? row[i] : .null {
            case .null: out += "null"
            case .int(let v): out += String(v)
            case .double(let d): out += d.isFinite ? number(d) : "null"
            case .text(let s): JSON.appendString(s, to: &out)
            case .blob(let b): JSON.appendString(blobText(b), to: &out)
            }
        }
        return out + "}"
    }

    // MARK: CSV

    /// One CSV record (RFC 4180): fields quoted when they hold a comma, quote, CR or LF, quotes
    /// doubled. NULL is an empty field; an empty string is `""`, so the two stay apart.
    /// No line terminator (the caller adds CRLF).
    public static func csvLine(_ row: [SQLValue]) -> String {
        row.map { value -> String in
            switch value {
            case .null: ""
            case .int(let v): String(v)
            case .double(let d): d.isFinite ? number(d) : quoteCSV(String(d))
            case .text(let s): quoteCSV(s)
            case .blob(let b): quoteCSV(blobText(b))
            }
        }.joined(separator: ",")
    }

    /// The CSV header record.
    public static func csvHeader(_ columns: [String]) -> String {
        columns.map(quoteCSV).joined(separator: ",")
    }

    static func quoteCSV(_ s: String) -> String {
        if s.isEmpty { return "\"\"" }
        guard s.utf8.contains(where: { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 10 || $0 == 13 }) else {
            return s
        }
        return "\"" + s.replacingAll("\"", with: "\"\"") + "\""
    }

    // MARK: Table

    /// The `audit_pairs` columns `hookgate audit list` shows, in order.
    public static let listColumns = [
        "request_id", "received_at", "team", "hook_id", "event_request_id", "decision", "status", "upstream_status",
        "total_ms",
    ]

    /// An aligned table of `columns` picked from `rows` (in `allColumns` order): a header row,
    /// then one line per row; columns separated by two spaces and padded to the widest cell,
    /// numbers right-aligned; NULL shown as `-`; control characters escaped.
    public static func table(_ rows: [[SQLValue]], columns: [String] = listColumns,
                             from allColumns: [String] = AuditQuery.pairColumns) -> [String] {
        var out: [UInt8] = []
        writeTable(rows, columns: columns, from: allColumns, into: &out)
        return out.split(separator: 10, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
    }

    /// The same table appended to `out` as UTF-8 lines, each ending in a newline: built in one
    /// buffer, with one string per cell and no per-line strings (`hookgate audit list`).
    public static func writeTable(_ rows: [[SQLValue]], columns: [String] = listColumns,
                                  from allColumns: [String] = AuditQuery.pairColumns, into out: inout [UInt8]) {
        let indices = columns.map { name in allColumns.firstIndex(of: name) }
        var cells: [String] = []
        cells.reserveCapacity(rows.count * columns.count)
        var numeric = [Bool](repeating: false, count: columns.count)
        var widths = columns.map(width)
        for row in rows {
            for (i, index) in indices.enumerated() {
                guard let index, index < row.count else { cells.append("-"); continue }
                let value = row[index]
                switch value {
                case .int, .double: numeric[i] = true
                default: break
                }
                let cell = display(value)
                widths[i] = max(widths[i], width(cell))
                cells.append(cell)
            }
        }
        let lineWidth = widths.reduce(2 * columns.count, +)
        out.reserveCapacity(out.count + (rows.count + 1) * (lineWidth + 1))
        func line(_ count: Int, _ cell: (Int) -> String) {
            for i in 0..<count {
                let text = cell(i)
                let padding = widths[i] - width(text)
                if i > 0 { out.append(32); out.append(32) }
                if numeric[i] {
                    out.append(contentsOf: repeatElement(32, count: padding))
                    out.append(contentsOf: text.utf8)
                } else {
                    out.append(contentsOf: text.utf8)
                    if i < count - 1 { out.append(contentsOf: repeatElement(32, count: padding)) }
                }
            }
            out.append(10)
        }
        let n = columns.count
        line(n) { columns[$0] }
        for r in 0..<rows.count { line(n) { cells[r * n + $0] } }
    }

    /// Columns a cell takes on a terminal: its bytes when it is ASCII (almost always: ids, times,
    /// decisions), else its characters.
    static func width(_ s: String) -> Int {
        let ascii = s.utf8.withContiguousStorageIfAvailable { $0.allSatisfy { $0 < 0x80 } } ?? false
        return ascii ? s.utf8.count : s.count
    }

    /// A value for people: NULL as `-`, numbers as in JSON, text with control characters escaped.
    public static func display(_ value: SQLValue) -> String {
        switch value {
        case .null: "-"
        case .int(let v): String(v)
        case .double(let d): d.isFinite ? number(d) : String(d)
        case .text(let s): escapeControls(s)
        case .blob(let b): escapeControls(blobText(b))
        }
    }

    // MARK: show

    /// `hookgate audit show`: a `[table]` line, then one `name: value` line per stored column,
    /// for the request record and the response record. NULL prints as `(null)`; text (and a
    /// UTF-8 body) as text with control characters escaped (`\n`, `\u{1b}`), so each field
    /// stays on one line and nothing reaches the terminal as a control sequence; a body that
    /// is not UTF-8 as `(N bytes, not UTF-8) <hex>`.
    public static func showLines(_ pair: AuditRecordPair) -> [String] {
        var lines = ["[audit_requests]"]
        lines += pair.request.map(showLine)
        lines.append("[audit_responses]")
        if let response = pair.response {
            lines += response.map(showLine)
        } else {
            lines.append("(no response record: the call was in flight, or the gateway stopped before answering)")
        }
        return lines
    }

    static func showLine(_ field: AuditField) -> String {
        let value: String
        switch field.value {
        case .null: value = "(null)"
        case .int(let v): value = String(v)
        case .double(let d): value = d.isFinite ? number(d) : String(d)
        case .text(let s): value = escapeControls(s)
        case .blob(let b):
            if let text = String(validating: b, as: UTF8.self) {
                value = escapeControls(text)
            } else {
                value = "(\(b.count) bytes, not UTF-8) \(hex(b))"
            }
        }
        return "\(field.name): \(value)"
    }

    // MARK: -

    /// Swift's shortest round-trip form (`12.5`, `3.0`, `1e-05`): valid JSON for finite values.
    static func number(_ d: Double) -> String { String(d) }

    static func blobText(_ b: [UInt8]) -> String { String(validating: b, as: UTF8.self) ?? hex(b) }

    static func hex(_ b: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(b.count * 2)
        for byte in b {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// C0 and C1 controls and DEL as `\n`, `\r`, `\t` or `\u{..}`: safe on a terminal, one line.
    static func escapeControls(_ s: String) -> String {
        // Fast path on the bytes: C0 and DEL are single bytes, C1 controls start with 0xC2.
        let plain = s.utf8.withContiguousStorageIfAvailable { !$0.contains { $0 < 0x20 || $0 == 0x7f || $0 == 0xc2 } }
        if plain == true { return s }
        guard s.unicodeScalars.contains(where: isControl) else { return s }
        var out = ""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where isControl(scalar): out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value)
    }
}

extension String {
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self {
            if c == target { out += replacement } else { out.append(c) }
        }
        return out
    }
}

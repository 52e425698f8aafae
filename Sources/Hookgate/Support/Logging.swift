public import Foundation
public import Logging

/// Writes whole lines to a file descriptor from its own thread, so that the event loop
/// never blocks on stderr. The queue is bounded: past `capacity` lines, new lines are
/// dropped and counted (and the count is reported once there is room again).
public final class LineWriter: @unchecked Sendable {
    private let fd: Int32
    private let capacity: Int
    private let condition = NSCondition()
    /// Lines waiting for the writer thread, newline-terminated, in one buffer (no allocation
    /// per line); swapped with `spare` by the writer.
    private var pending: [UInt8] = []
    private var spare: [UInt8] = []
    private var pendingLines = 0
    private var dropped = 0
    private var writing = false

    public static let stderr = LineWriter(fd: 2)
    public static let stdout = LineWriter(fd: 1)

    public init(fd: Int32, capacity: Int = 10_000) {
        self.fd = fd
        self.capacity = capacity
        pending.reserveCapacity(64 * 1024)
        spare.reserveCapacity(64 * 1024)
        let thread = Thread { [unowned self] in
            ThreadName.set("hookgate-log-\(fd)")
            self.drain()
        }
        thread.name = "hookgate-log-\(fd)"
        thread.start()
    }

    public func write(_ line: String) {
        var line = line
        line.withUTF8 { write(bytes: $0) }
    }

    /// A line as UTF-8 bytes, without its newline.
    public func write<Bytes: Collection>(bytes line: Bytes) where Bytes.Element == UInt8 {
        condition.lock()
        let wake: Bool
        if pendingLines >= capacity {
            dropped += 1
            wake = false
        } else {
            pending.append(contentsOf: line)
            pending.append(10)
            pendingLines += 1
            wake = pendingLines == 1
        }
        condition.unlock()
        // Only the first line of a batch wakes the writer (after unlocking, so that it does
        // not wake into a held lock); the rest wait for the batch.
        if wake { condition.broadcast() }  // broadcast: flush() may be waiting too
    }

    /// Writes `line` at once, in the calling thread, after anything queued (the simulator uses
    /// this so that a request's line is out before its answer; never used on the gateway's loop).
    public func writeNow(_ line: String) {
        flush()
        condition.lock()
        defer { condition.unlock() }
        writeAll(Array((line + "\n").utf8))
    }

    /// write(2) until done (retrying EINTR); a failing descriptor drops the rest.
    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, base + offset, raw.count - offset)
                if n <= 0 { if errno == EINTR { continue } else { break } }
                offset += n
            }
        }
    }

    /// Blocks until every queued line is written (shutdown, tests).
    public func flush() {
        condition.lock()
        while pendingLines > 0 || writing { condition.wait() }
        condition.unlock()
    }

    private func drain() {
        while true {
            condition.lock()
            while pendingLines == 0 { condition.wait() }
            if pendingLines < capacity / 2 {
                // Let a busy loop add more lines first: one wake-up and one write(2) per
                // millisecond at most, rather than one per request.
                condition.unlock()
                usleep(1000)
                condition.lock()
            }
            var batch: [UInt8] = []
            swap(&batch, &pending)   // the lines to write
            swap(&pending, &spare)   // an empty buffer with capacity takes new lines
            pendingLines = 0
            if dropped > 0 {
                batch.append(contentsOf: #"{"level":"warning","msg":"log lines dropped","count":\#(dropped)}"#.utf8)
                batch.append(10)
                dropped = 0
            }
            writing = true
            condition.unlock()
            writeAll(batch)
            batch.removeAll(keepingCapacity: true)
            condition.lock()
            if batch.capacity <= 1 << 20 { spare = batch }  // keep a buffer of ordinary size for next time
            writing = false
            condition.broadcast()
            condition.unlock()
        }
    }
}

/// swift-log handler printing one JSON object per line: `ts`, `level`, `msg`, then the
/// metadata (dot-named keys, numbers as JSON numbers). It prints what it is given:
/// callers pass fingerprints, never keys or tokens.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String
    private let writer: LineWriter

    public init(label: String, writer: LineWriter = .stderr) {
        self.label = label
        self.writer = writer
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = "{\"ts\":\"\(Timestamp.rfc3339(Date()))\",\"level\":\"\(event.level.rawValue)\",\"msg\":"
        JSON.appendString(event.message.description, to: &line)
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        for key in merged.keys.sorted() {
            line += ","
            JSON.appendString(key, to: &line)
            line += ":"
            JSONLogHandler.append(merged[key]!, to: &line)
        }
        line += "}"
        writer.write(line)
    }

    private static func append(_ value: Logger.MetadataValue, to line: inout String) {
        switch value {
        case .string(let s):
            JSON.appendString(s, to: &line)
        case .stringConvertible(let c):
            // Numbers and booleans print bare; anything else is quoted. Decided from the text
            // (cheap) rather than by dynamic casts on every value of every line.
            let text = c.description
            if JSON.isBareLiteral(text) {
                line += text
            } else {
                JSON.appendString(text, to: &line)
            }
        case .array(let items):
            line += "["
            for (i, item) in items.enumerated() {
                if i > 0 { line += "," }
                append(item, to: &line)
            }
            line += "]"
        case .dictionary(let dict):
            line += "{"
            for (i, key) in dict.keys.sorted().enumerated() {
                if i > 0 { line += "," }
                JSON.appendString(key, to: &line)
                line += ":"
                append(dict[key]!, to: &line)
            }
            line += "}"
        }
    }
}

public enum Timestamp {
    /// UTC `YYYY-MM-DDTHH:MM:SS.sssZ`.
    public static func rfc3339(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(ms / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        // Hand-formatted: this runs for every request (log line, audit records).
        var out = [UInt8]()
        out.reserveCapacity(24)
        func digits(_ value: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var v = value
            while divisor > 0 {
                out.append(UInt8(48 + (v / divisor) % 10))
                v %= divisor
                divisor /= 10
            }
        }
        digits(Int(parts.tm_year) + 1900, 4); out.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2); out.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2); out.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2); out.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2); out.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2); out.append(UInt8(ascii: "."))
        digits(Int(ms % 1000), 3); out.append(UInt8(ascii: "Z"))
        return String(decoding: out, as: UTF8.self)
    }
}

/// Minimal JSON text helpers for hand-built lines (logs, problem bodies).
public enum JSON {
    /// Whether `s` needs escaping in a JSON string (a control byte, `"` or `\\`).
    static func needsEscaping(_ s: String) -> Bool {
        if let answer = s.utf8.withContiguousStorageIfAvailable({ buf in
            buf.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }
        }) { return answer }
        return s.utf8.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }
    }

    public static func appendString(_ s: String, to out: inout String) {
        // Fast path: most values need no escaping and are appended whole.
        if !needsEscaping(s) {
            out += "\""
            out += s
            out += "\""
            return
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(s.utf8.count + 8)
        bytes.append(0x22)
        let hex = Array("0123456789abcdef".utf8)
        for b in s.utf8 {
            switch b {
            case 0x22: bytes.append(0x5C); bytes.append(0x22)
            case 0x5C: bytes.append(0x5C); bytes.append(0x5C)
            case 0x0A: bytes.append(0x5C); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(0x5C); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(0x5C); bytes.append(UInt8(ascii: "t"))
            case 0..<0x20:
                bytes.append(contentsOf: Array("\\u00".utf8))
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 0x0f)])
            default: bytes.append(b)
            }
        }
        bytes.append(0x22)
        out += String(decoding: bytes, as: UTF8.self)
    }

    /// True for `true`, `false` and finite JSON numbers (`-12`, `3.5`, `1e-3`).
    static func isBareLiteral(_ s: String) -> Bool {
        if s == "true" || s == "false" { return true }
        let utf8 = s.utf8
        guard let first = utf8.first, first == UInt8(ascii: "-") || (first >= 48 && first <= 57) else { return false }
        return utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
            || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") || $0 == UInt8(ascii: "+") }
            && Double(s) != nil
    }

    public static func string(_ s: String) -> String {
        var out = ""
        appendString(s, to: &out)
        return out
    }
}

public enum HookgateLogging {
    /// Installs the JSON handler for the process (call once, first thing).
    public static func bootstrap(level: Logger.Level = .info) {
        LoggingSystem.bootstrap { label in
            var handler = JSONLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

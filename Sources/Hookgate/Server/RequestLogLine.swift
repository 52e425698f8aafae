import Foundation

// Threads: the loop thread (one reused buffer per gateway).

/// One JSON log line for a request: `ts`, `level`, `msg`, then the fields in order. Built as
/// bytes in a buffer the gateway reuses for every line (this runs for every call).
struct RequestLogLine {
    let buffer: ByteBuffer

    init(into buffer: ByteBuffer, timestamp: String) {
        self.buffer = buffer
        buffer.reset()
        buffer.append(#"{"ts":""# as StaticString)
        buffer.append(timestamp)
        buffer.append(#"","level":"info","msg":"request""# as StaticString)
    }

    private func key(_ key: StaticString) {
        buffer.append(#",""# as StaticString)
        buffer.append(key)
        buffer.append(#"":"# as StaticString)
    }

    /// A string field, cut to `limit` bytes of UTF-8.
    func text(_ name: StaticString, _ value: String, limit: Int = 1024) {
        key(name)
        let value = value.utf8Prefix(limit)
        if JSON.needsEscaping(value) {
            var escaped = ""
            JSON.appendString(value, to: &escaped)
            buffer.append(escaped)
        } else {
            buffer.append(byte: 0x22)
            buffer.append(value)
            buffer.append(byte: 0x22)
        }
    }

    func number(_ name: StaticString, _ value: Double) {
        key(name)
        if value == value.rounded() && abs(value) < 1e15 {
            buffer.append(String(Int64(value)))
        } else {
            buffer.append(String(value))
        }
    }

    func finish() {
        buffer.append(byte: UInt8(ascii: "}"))
    }
}

extension String {
    /// At most `limit` bytes of UTF-8, cut at a scalar boundary (no grapheme work: the common
    /// case, a short string, costs one length check).
    func utf8Prefix(_ limit: Int) -> String {
        let utf8 = self.utf8
        guard utf8.count > limit else { return self }
        var end = utf8.index(utf8.startIndex, offsetBy: limit)
        while end > utf8.startIndex, UTF8.isContinuation(utf8[end]) { end = utf8.index(before: end) }
        return String(decoding: utf8[utf8.startIndex..<end], as: UTF8.self)
    }
}

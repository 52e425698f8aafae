import Foundation

// Threads: any (blocking file I/O: never on the loop).

/// Writes bytes to a file and fsyncs them before returning: the checkpoint log's appends and
/// the signing key's files.
package enum DurableWrite {
    /// `exclusive`: create the file, failing if it exists (keys); else append, creating it.
    /// `mode` applies to a file it creates. Returns why it failed, or nil.
    package static func write(_ text: String, to path: String, exclusive: Bool, mode: Int) -> String? {
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_APPEND)
        let fd = open(path, flags, mode_t(mode))
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { return written < 0 ? String(cString: strerror(errno)) : "short write" }
        guard fsync(fd) == 0 else { return String(cString: strerror(errno)) }
        return nil
    }
}

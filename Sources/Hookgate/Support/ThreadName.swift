import Foundation

// Threads: the thread being named.

enum ThreadName {
    /// Names the calling thread for the kernel (`/proc/<pid>/task/<tid>/comm`, `top -H`,
    /// `perf`): Foundation's `Thread.name` does not reach it on Linux, and glibc's
    /// `pthread_setname_np` is not visible to Swift. At most 15 bytes are kept.
    static func set(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}

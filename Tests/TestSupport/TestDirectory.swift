import Foundation

/// Directories for tests under the system's temporary directory, each removed when the test
/// process exits. Set `HOOKGATE_KEEP_TEST_DIRS=1` to keep them (a failed test's config, audit
/// file and logs).
public enum TestDirectory {
    /// The paths made so far, behind an `NSLock`: ThreadSanitizer does not see the futex of a
    /// Swift `Mutex` and reported parallel tests appending here as a race (a `Mutex` held in a
    /// global, then one inside a class alike).
    private final class Made: @unchecked Sendable {
        private let lock = NSLock()
        private var paths: [String] = []

        func add(_ path: String) {
            lock.lock()
            defer { lock.unlock() }
            paths.append(path)
        }

        func all() -> [String] {
            lock.lock()
            defer { lock.unlock() }
            return paths
        }
    }
    private static let made = Made()
    private static let removeAtExit: Void = {
        atexit { TestDirectory.removeAll() }
    }()

    /// A new, empty directory named after `name`.
    public static func make(_ name: String) -> String {
        _ = removeAtExit
        let path = NSTemporaryDirectory() + "hookgate-test-\(name)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        made.add(path)
        return path
    }

    private static func removeAll() {
        guard ProcessInfo.processInfo.environment["HOOKGATE_KEEP_TEST_DIRS"] != "1" else { return }
        for path in made.all() { try? FileManager.default.removeItem(atPath: path) }
    }
}

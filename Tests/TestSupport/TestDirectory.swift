import Foundation
import Synchronization

/// Directories for tests under the system's temporary directory, each removed when the test
/// process exits. Set `HOOKGATE_KEEP_TEST_DIRS=1` to keep them (a failed test's config, audit
/// file and logs).
public enum TestDirectory {
    /// The paths made so far. (A class around the `Mutex`: a `Mutex` held directly in a global
    /// is reported by ThreadSanitizer as a racing access to that global.)
    private final class Made: Sendable {
        let paths = Mutex<[String]>([])
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
        made.paths.withLock { $0.append(path) }
        return path
    }

    private static func removeAll() {
        guard ProcessInfo.processInfo.environment["HOOKGATE_KEEP_TEST_DIRS"] != "1" else { return }
        for path in made.paths.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }
}

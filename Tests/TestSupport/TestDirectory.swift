import Foundation
import Synchronization

/// Directories for tests under the system's temporary directory, each removed when the test
/// process exits. Set `HOOKGATE_KEEP_TEST_DIRS=1` to keep them (a failed test's config, audit
/// file and logs).
public enum TestDirectory {
    private static let made = Mutex<[String]>([])
    private static let removeAtExit: Void = {
        atexit { TestDirectory.removeAll() }
    }()

    /// A new, empty directory named after `name`.
    public static func make(_ name: String) -> String {
        _ = removeAtExit
        let path = NSTemporaryDirectory() + "hookgate-test-\(name)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        made.withLock { $0.append(path) }
        return path
    }

    private static func removeAll() {
        guard ProcessInfo.processInfo.environment["HOOKGATE_KEEP_TEST_DIRS"] != "1" else { return }
        for path in made.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }
}

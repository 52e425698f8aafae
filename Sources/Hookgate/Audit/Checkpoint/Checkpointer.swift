import Foundation

// Threads: the audit writer thread only.

/// Signs a checkpoint every `intervalSeconds` when records were added, and once more at a clean
/// stop: into the file's `audit_checkpoints`, then one JSON line appended (and fsynced) to the
/// checkpoint log if there is one. A failure is reported and retried at the next interval;
/// calls never wait for it.
final class Checkpointer {
    private let signer: AuditSigningKey
    private let intervalNanos: UInt64
    private let logPath: String?
    private let onNotice: @Sendable (String) -> Void
    private var lastAttempt: UInt64 = 0
    private var lastSigned: Int64 = 0

    init(signer: AuditSigningKey, intervalSeconds: Int, logPath: String?, onNotice: @escaping @Sendable (String) -> Void) {
        self.signer = signer
        intervalNanos = UInt64(intervalSeconds) * 1_000_000_000
        self.logPath = logPath
        self.onNotice = onNotice
        lastAttempt = EventLoop.monotonicNanos()
    }

    /// Signs if the interval has passed since the last attempt (or `now` is a stop).
    func tick(_ file: AuditFile, stopping: Bool = false) {
        let now = EventLoop.monotonicNanos()
        guard stopping || now - lastAttempt >= intervalNanos else { return }
        lastAttempt = now
        guard stopping || file.headSeq > lastSigned else { return }
        switch file.writeCheckpoint(signer: signer, at: Timestamp.rfc3339(Date())) {
        case .failure(let error):
            onNotice("audit checkpoint not written (retried at the next interval): \(error)")
        case .success(nil):
            break
        case .success(let checkpoint?):
            lastSigned = checkpoint.seq
            if let logPath, let problem = DurableWrite.write(checkpoint.jsonLine + "\n", to: logPath, exclusive: false, mode: 0o640) {
                onNotice("audit checkpoint signed but not appended to \(logPath): \(problem)")
            }
        }
    }
}

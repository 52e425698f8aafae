import Foundation
import Logging

/// Resolves an upstream host off the loop, on its own thread: once at start (waiting briefly so
/// that the first calls find an address), then every `interval` seconds, handing each result
/// to the pool on the loop. `stop()` ends the thread (at shutdown) within a moment.
final class Resolver: @unchecked Sendable {
    private let loop: EventLoop
    private let host: String
    private let port: Int
    /// Touched only inside `loop.execute`, on the loop.
    private let pool: LoopBound<UpstreamPool>
    private let logger: Logger
    private let interval: Double
    private let wake = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var stopping = false
    private var thread: Thread?

    init(loop: EventLoop, host: String, port: Int, pool: LoopBound<UpstreamPool>, logger: Logger, interval: Double = 30) {
        self.loop = loop
        self.host = host
        self.port = port
        self.pool = pool
        self.logger = logger
        self.interval = interval
    }

    /// Whether the resolver thread has ended (after `stop()`).
    var isFinished: Bool { thread?.isFinished ?? true }

    func start(waitFirstMs: Int) {
        let first = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            ThreadName.set("hookgate-resolver")
            var signalled = false
            var lastError: String? = nil
            while !isStopping {
                let result = SocketAddress.resolve(host: host, port: port)
                let pool = self.pool
                loop.execute {
                    switch result {
                    case .success(let list): pool.value.setAddresses(list, error: nil)
                    case .failure(let error): pool.value.setAddresses([], error: error.message)
                    }
                }
                if case .failure(let error) = result, error.message != lastError {
                    logger.warning("upstream address not resolved", metadata: ["error": "\(error.message)"])
                    lastError = error.message
                } else if case .success = result {
                    lastError = nil
                }
                if !signalled { signalled = true; first.signal() }
                _ = wake.wait(timeout: .now() + interval)
            }
        }
        thread.name = "hookgate-resolver"
        self.thread = thread
        thread.start()
        _ = first.wait(timeout: .now() + .milliseconds(waitFirstMs))
    }

    private var isStopping: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopping
    }

    /// Ends the thread: it finishes a lookup under way, then exits.
    func stop() {
        lock.lock()
        stopping = true
        lock.unlock()
        wake.signal()
    }
}

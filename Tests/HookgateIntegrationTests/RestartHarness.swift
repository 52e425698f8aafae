import Foundation
import HookgateTestSupport

/// A listening socket the test holds the way systemd holds a socket unit's: gateways come and
/// go on it while connections wait in its backlog.
final class HeldSocket {
    let fd: Int32
    let port: Int

    init() throws {
        let (bound, port) = RawHTTP.boundSocket()
        guard listen(bound, 4096) == 0 else { throw HarnessError("listen failed: errno \(errno)") }
        // Out of the way of the descriptors a child is given (3), and not inherited by others.
        fd = fcntl(bound, F_DUPFD_CLOEXEC, 100)
        close(bound)
        self.port = port
    }

    deinit { close(fd) }
}

/// `hookgate serve` started as systemd starts a socket-activated service: the held socket as
/// descriptor 3, `LISTEN_FDS=1` and `LISTEN_PID` its own pid (set by `sh` before it `exec`s
/// the gateway, so the pid is the same). Its output goes to a log file.
final class ActivatedGateway: @unchecked Sendable {
    let pid: pid_t
    let logPath: String

    init(socket: HeldSocket, configPath: String, logPath: String, environment: [String: String]) throws {
        self.logPath = logPath
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        env["LISTEN_FDS"] = "1"
        env["LISTEN_FDNAMES"] = "main"
        env.removeValue(forKey: "LISTEN_PID")
        let argv = ["/bin/sh", "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", Harness.binary, "serve", "--config", configPath]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_adddup2(&actions, socket.fd, 3)
        Self.closeFrom(4, &actions)
        var pid: pid_t = 0
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (cArgv + cEnv).forEach { free($0) } }
        let rc = posix_spawn(&pid, "/bin/sh", &actions, nil, cArgv, cEnv)
        guard rc == 0 else { throw HarnessError("posix_spawn failed: \(rc)") }
        self.pid = pid
    }

    /// The test process's other descriptors (pipes of other children, databases) stay out of
    /// the gateway, as they would under systemd: glibc's `posix_spawn_file_actions_addclosefrom_np`
    /// (not in Swift's Glibc module, so looked up by name).
    private static func closeFrom(_ fd: Int32, _ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return }
        _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, fd)
    }

    var logLines: [String] {
        (try? String(contentsOfFile: logPath, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? []
    }

    var logObjects: [[String: Any]] { ChildProcess.objects(logLines) }

    func waitListening(seconds: Double = 15) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let line = logObjects.first(where: { $0["msg"] as? String == "listening" }) { return line }
            if exited != nil { throw HarnessError("gateway exited before listening: \(logLines.suffix(5))") }
            Thread.sleep(forTimeInterval: 0.01)
        }
        throw HarnessError("gateway not listening after \(seconds) s: \(logLines.suffix(5))")
    }

    func signal(_ sig: Int32) {
        guard exited == nil else { return }  // reaped: the pid may be another process's now
        kill(pid, sig)
    }

    private var status: Int32?
    /// The exit status once the process has exited (reaped here), else nil.
    var exited: Int32? {
        if let status { return status }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
        status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        return status
    }

    @discardableResult
    func waitForExit(seconds: Double = 40) -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while exited == nil {
            if Date() > deadline { signal(SIGKILL) }
            Thread.sleep(forTimeInterval: 0.005)
        }
        return exited!
    }

    func stop() {
        guard exited == nil else { return }
        signal(SIGTERM)
        waitForExit()
    }
}

/// Callers making redeliver calls back to back, each on a new connection (a script or a job
/// calling the shared URL), until stopped; every call's outcome is kept.
final class CallStream: @unchecked Sendable {
    enum Outcome: Equatable {
        case answered(status: Int, requestID: String)
        /// Connection refused, reset, or closed without a whole answer.
        case failed(String)
    }

    /// How `RawHTTP` reports a connection closed or reset before a whole answer.
    static let closedWithoutAnswer = "invalid HTTP response from upstream: connection closed without a response"

    private let lock = NSLock()
    private var _outcomes: [Outcome] = []
    private var running = true
    private let done = DispatchGroup()

    init(port: Int, key: TeamKey, callers: Int = 4) {
        for caller in 0..<callers {
            done.enter()
            Thread.detachNewThread { [self] in
                var n = 0
                while lock.withLock({ running }) {
                    let event = String(format: "5eed0000-0000-4000-8000-%04d%08d", caller, n)
                    n += 1
                    let outcome: Outcome
                    do {
                        let answer = try RawHTTP.request(
                            port: port, target: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/\(event)/redeliver",
                            headers: [("Authorization", "Bearer \(key.key)")])
                        outcome = answer.status == 0 ? .failed("no answer") : .answered(status: answer.status, requestID: answer.header("X-Request-Id") ?? "")
                    } catch {
                        outcome = .failed("\(error)")
                    }
                    lock.withLock { _outcomes.append(outcome) }
                }
                done.leave()
            }
        }
    }

    var outcomes: [Outcome] { lock.withLock { _outcomes } }

    /// Waits until `count` more calls were made.
    func waitFor(calls count: Int, seconds: Double = 20) throws {
        let target = outcomes.count + count
        let deadline = Date().addingTimeInterval(seconds)
        while outcomes.count < target {
            if Date() > deadline { throw HarnessError("only \(outcomes.count) of \(target) calls made in \(seconds) s") }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    /// Stops the callers (each finishes its call under way) and returns every outcome.
    func stop() -> [Outcome] {
        lock.withLock { running = false }
        done.wait()
        return outcomes
    }

    /// A readable summary: outcomes other than 200, counted.
    static func problems(_ outcomes: [Outcome]) -> [String: Int] {
        var counts: [String: Int] = [:]
        for outcome in outcomes {
            switch outcome {
            case .answered(200, _): continue
            case .answered(let status, _): counts["status \(status)", default: 0] += 1
            case .failed(let why): counts[why, default: 0] += 1
            }
        }
        return counts
    }
}

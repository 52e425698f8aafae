import Foundation
import HookgateTestSupport
import Testing
@testable import Hookgate

/// Shared pieces for tests that run the real `hookgate` binary over real loopback sockets.
enum Harness {
    /// The `hookgate` executable built next to the test bundle (override: HOOKGATE_BIN).
    static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["HOOKGATE_BIN"] { return path }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The test runner may live inside a bundle directory; walk up to the build products.
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("hookgate").path
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDir), !isDir.boolValue { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return "hookgate"
    }()

    /// A directory for one test, removed when the test process exits.
    static func tempDir(_ name: String = "t") -> String { TestDirectory.make(name) }

    static let serviceToken = "svc-" + UUID().uuidString
}

/// A child process whose stdout and stderr lines are collected as they arrive.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var _stdout: [String] = []
    private var _stderr: [String] = []

    init(arguments: [String], environment: [String: String] = [:], executable: String = Harness.binary) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        collect(out.fileHandleForReading) { [unowned self] in self._stdout.append($0) }
        collect(err.fileHandleForReading) { [unowned self] in self._stderr.append($0) }
        try process.run()
    }

    /// A pipe's read end and the bytes of a line not yet complete; read only under `lock`.
    private final class Stream: @unchecked Sendable {
        let fd: Int32
        var pending: [UInt8] = []
        var open = true
        init(fd: Int32) { self.fd = fd }
    }
    private var streams: [Stream] = []

    /// Reads happen under the lock, by a background thread and by every accessor (which
    /// drains what the pipe holds first): a line the child wrote before answering is always
    /// seen by a test that got the answer.
    private func collect(_ handle: FileHandle, _ append: @escaping @Sendable (String) -> Void) {
        let stream = Stream(fd: handle.fileDescriptor)
        _ = fcntl(stream.fd, F_SETFL, fcntl(stream.fd, F_GETFL) | O_NONBLOCK)
        streams.append(stream)
        let lock = self.lock
        let drain = ChildProcess.drainer(stream, append)
        Thread.detachNewThread {
            _ = handle  // keeps the pipe open as long as the reader runs
            while true {
                var pfd = pollfd(fd: stream.fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&pfd, 1, 100)
                lock.lock()
                drain()
                let open = stream.open
                lock.unlock()
                if !open { break }
            }
        }
        drainers.append(drain)
    }

    private var drainers: [@Sendable () -> Void] = []

    private static func drainer(_ stream: Stream, _ append: @escaping @Sendable (String) -> Void) -> @Sendable () -> Void {
        return {
            guard stream.open else { return }
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buf.withUnsafeMutableBytes { read(stream.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    stream.pending.append(contentsOf: buf[0..<n])
                    while let nl = stream.pending.firstIndex(of: 10) {
                        append(String(decoding: stream.pending[..<nl], as: UTF8.self))
                        stream.pending.removeSubrange(...nl)
                    }
                    continue
                }
                if n == 0 {  // end of file: the child closed it
                    if !stream.pending.isEmpty { append(String(decoding: stream.pending, as: UTF8.self)) }
                    stream.pending.removeAll()
                    stream.open = false
                }
                return
            }
        }
    }

    var stdoutLines: [String] { lock.lock(); defer { lock.unlock() }; drainers.forEach { $0() }; return _stdout }
    var stderrLines: [String] { lock.lock(); defer { lock.unlock() }; drainers.forEach { $0() }; return _stderr }

    /// JSON objects among the lines of `stream`.
    static func objects(_ lines: [String]) -> [[String: Any]] {
        lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Waits until `condition` holds (polling), or fails after `seconds`.
    func wait(_ what: String, seconds: Double = 10, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() > deadline {
                throw HarnessError("timed out waiting for \(what); stderr: \(stderrLines.suffix(5)) stdout: \(stdoutLines.suffix(3))")
            }
            if !process.isRunning && !condition() {
                // Let the readers catch up with the last lines before judging.
                Thread.sleep(forTimeInterval: 0.05)
                if condition() { return }
                throw HarnessError("process exited (\(process.terminationStatus)) before \(what); stderr: \(stderrLines.suffix(5))")
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    /// Starts `hookgate` with `arguments` and waits for its `listening` line on the given
    /// stream (the simulator prints it on stdout, the gateway logs it on stderr).
    static func startListening(arguments: [String], environment: [String: String],
                               announcedOn stream: KeyPath<ChildProcess, [String]>) throws -> (ChildProcess, [String: Any]) {
        let child = try ChildProcess(arguments: arguments, environment: environment)
        func listening() -> [String: Any]? { objects(child[keyPath: stream]).first { $0["msg"] as? String == "listening" } }
        try child.wait("\(arguments.first ?? "hookgate") listening") { listening() != nil }
        return (child, listening()!)
    }

    /// Signals the process while it runs; never after it was reaped (its pid may be another's by then).
    func signal(_ sig: Int32) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, sig)
    }

    /// Waits for the process to exit; returns its status (kills it after `seconds`).
    @discardableResult
    func waitForExit(seconds: Double = 10) -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            signal(SIGTERM)
            waitForExit()
        }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `hookgate simulate-upstream` with a throwaway CA, on a free port.
final class SimulatorProcess: @unchecked Sendable {
    let child: ChildProcess
    let port: Int
    let caFile: String

    init(dir: String, names: [String] = ["localhost", "127.0.0.1"], extra: [String] = [],
         token: String = Harness.serviceToken, environment: [String: String] = [:]) throws {
        var args = ["simulate-upstream", "--port", "0", "--pki-dir", dir + "/sim-pki", "--slow-ms", "3000"]
        for n in names { args += ["--name", n] }
        var env = environment
        env["HOOKSHOT_SERVICE_TOKEN"] = token
        let (child, line) = try ChildProcess.startListening(arguments: args + extra, environment: env, announcedOn: \.stdoutLines)
        self.child = child
        port = line["port"] as! Int
        caFile = line["ca_file"] as! String
    }

    /// Token requests the simulator received (its `token_request` lines).
    var tokenRequests: [[String: Any]] {
        ChildProcess.objects(child.stdoutLines).filter { $0["msg"] as? String == "token_request" }
    }

    /// Requests the simulator received, as it printed them.
    var requests: [[String: Any]] {
        ChildProcess.objects(child.stdoutLines).filter { $0["msg"] as? String == "request" }
    }

    static func headers(of request: [String: Any]) -> [(String, String)] {
        (request["headers"] as? [[String]] ?? []).map { ($0[0], $0[1]) }
    }

    func stop() { child.stop() }
}

/// `hookgate serve` on free ports with a config written for the test.
final class GatewayProcess: @unchecked Sendable {
    let child: ChildProcess
    let port: Int
    let adminPort: Int
    let configPath: String

    init(dir: String, config: [String: Any], environment: [String: String] = ["HOOKSHOT_SERVICE_TOKEN": Harness.serviceToken]) throws {
        configPath = dir + "/config.json"
        let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: configPath))
        let (child, line) = try ChildProcess.startListening(arguments: ["serve", "--config", configPath], environment: environment,
                                                            announcedOn: \.stderrLines)
        self.child = child
        port = line["listen.port"] as! Int
        adminPort = line["admin.port"] as! Int
    }

    /// The audit file of `config(dir:...)`.
    var auditPath: String { URL(fileURLWithPath: configPath).deletingLastPathComponent().path + "/audit.sqlite3" }

    /// The per-request log lines.
    var requestLogs: [[String: Any]] {
        ChildProcess.objects(child.stderrLines).filter { $0["msg"] as? String == "request" }
    }

    func stop() { child.stop() }

    /// A config for one simulator, with `teams` as given.
    static func config(dir: String, simulator: SimulatorProcess?, upstreamHost: String = "localhost",
                       upstreamPort: Int? = nil, teams: [[String: Any]], extra: [String: Any] = [:],
                       upstream: [String: Any] = [:]) -> [String: Any] {
        var up: [String: Any] = [
            "base_url": "https://\(upstreamHost):\(upstreamPort ?? simulator?.port ?? 9)",
            "service_token": ["env": "HOOKSHOT_SERVICE_TOKEN"],
            "connect_timeout_ms": 1000,
            "timeout_ms": 1500,
        ]
        if let simulator { up["ca_file"] = simulator.caFile }
        for (k, v) in upstream { up[k] = v }
        var config: [String: Any] = [
            "listen": ["address": "127.0.0.1", "port": 0],
            "admin": ["address": "127.0.0.1", "port": 0],
            "upstream": up,
            "audit": ["path": dir + "/audit.sqlite3"],
            "teams": teams,
        ]
        for (k, v) in extra { config[k] = v }
        return config
    }
}

/// A team key and the config entry that accepts it.
struct TeamKey {
    let key: String
    let sha256: String
    init() {
        let made = KeyGen.make()
        key = made.key
        sha256 = made.sha256
    }
}

/// A minimal HTTP/1.1 client over a blocking socket: full control of what is sent.
struct HTTPResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]) ?? [:] }
}

enum RawHTTP {
    static func request(port: Int, method: String = "POST", target: String, headers: [(String, String)] = [],
                        body: [UInt8] = [], timeout: Double = 10) throws -> HTTPResponse {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        return try exchange(port: port, bytes: Array(head.utf8) + body, timeout: timeout)
    }

    /// Sends raw bytes, reads until the server closes, parses one response.
    static func exchange(port: Int, bytes: [UInt8], timeout: Double = 10) throws -> HTTPResponse {
        let raw = try roundTrip(port: port, bytes: bytes, timeout: timeout)
        var parser = ResponseParser(maxHeaderBytes: 1 << 20, maxBodyBytes: 1 << 24)
        switch try parser.feed(raw) {
        case .complete(let r):
            return HTTPResponse(status: r.status, headers: r.headers.map { ($0.name, $0.value) }, body: r.body)
        case .needMore:
            let r = try parser.finish()
            return HTTPResponse(status: r.status, headers: r.headers.map { ($0.name, $0.value) }, body: r.body)
        }
    }

    static func roundTrip(port: Int, bytes: [UInt8], timeout: Double) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket failed") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw HarnessError("connect to \(port) failed: errno \(errno)") }
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { break }
            sent += n
        }
        return readToEnd(fd)
    }

    /// Everything the peer sends until it closes (or the socket's receive timeout passes).
    static func readToEnd(_ fd: Int32) -> [UInt8] {
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    /// A TCP socket bound to a free loopback port (not listening: the caller decides).
    static func boundSocket() -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return (fd, Int(UInt16(bigEndian: addr.sin_port)))
    }

    /// A loopback port nothing listens on (free a moment ago).
    static func closedPort() -> Int {
        let (fd, port) = boundSocket()
        close(fd)
        return port
    }
}

/// The usual set-up: a simulator and a gateway in front of it, with one team `claims` whose
/// key is `key`. `withRig` always stops both, whatever the test does.
struct Rig {
    let dir: String
    let sim: SimulatorProcess
    let gw: GatewayProcess
    let key: TeamKey
    var auth: [(String, String)] { [("Authorization", "Bearer \(key.key)")] }
}

func withRig(_ name: String, allowHooks: [String] = ["*"], extra: [String: Any] = [:], upstream: [String: Any] = [:],
             _ body: (Rig) throws -> Void) throws {
    let dir = Harness.tempDir(name)
    let sim = try SimulatorProcess(dir: dir)
    defer { sim.stop() }
    let key = TeamKey()
    let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(
        dir: dir, simulator: sim, teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": allowHooks]],
        extra: extra, upstream: upstream))
    defer { gw.stop() }
    try body(Rig(dir: dir, sim: sim, gw: gw, key: key))
}

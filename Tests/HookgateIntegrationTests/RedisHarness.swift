import Foundation

/// A real `redis-server` (Debian's) in a temp dir: a Unix socket always, TCP on `port` if
/// given, `requirepass` if given, nothing persisted. Stopped with `stop()`; started again on
/// the same socket and port with `restart()`.
final class RedisProcess: @unchecked Sendable {
    static let server = "/usr/bin/redis-server"
    static let cli = "/usr/bin/redis-cli"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: server) }

    let dir: String
    let socketPath: String
    let port: Int?
    let password: String?
    private(set) var child: ChildProcess

    init(dir: String, port: Int? = nil, password: String? = nil) throws {
        self.dir = dir
        socketPath = dir + "/redis.sock"
        self.port = port
        self.password = password
        child = try Self.launch(dir: dir, socketPath: socketPath, port: port, password: password)
    }

    private static func launch(dir: String, socketPath: String, port: Int?, password: String?) throws -> ChildProcess {
        var args = ["--port", String(port ?? 0), "--bind", "127.0.0.1", "--unixsocket", socketPath, "--unixsocketperm", "700",
                    "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", ""]
        if let password { args += ["--requirepass", password] }
        let child = try ChildProcess(arguments: args, executable: server)
        do {
            try child.wait("redis-server ready") { child.stdoutLines.contains { $0.lowercased().contains("ready to accept connections") } }
        } catch {
            child.signal(SIGKILL)  // never left behind
            child.waitForExit()
            throw error
        }
        return child
    }

    var address: String { port.map { "127.0.0.1:\($0)" } ?? "unix:\(socketPath)" }

    /// Killed (SIGKILL), as a crash would: a test process may run its children with SIGTERM
    /// blocked, which redis-server does not unblock.
    func stop() {
        guard child.process.isRunning else { return }
        child.signal(SIGKILL)
        child.waitForExit()
    }

    func restart() throws {
        stop()
        child = try Self.launch(dir: dir, socketPath: socketPath, port: port, password: password)
    }

    /// `redis-cli` on the socket; its output.
    func command(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.cli)
        process.arguments = ["-s", socketPath] + arguments
        if let password { process.environment = ["REDISCLI_AUTH": password] }
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

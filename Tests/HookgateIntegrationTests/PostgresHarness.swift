import Foundation
@testable import Hookgate

/// A real PostgreSQL (Debian's) cluster made by `initdb` in a temp dir, on a loopback port,
/// password-authenticated (scram-sha-256) as user `hookgate`. As root (CI), the server runs as
/// the unprivileged `postgres` user, as PostgreSQL insists. Stopped with `stop()` (fast
/// shutdown), started again on the same data with `start()`.
final class PostgresProcess: @unchecked Sendable {
    static let binDir: String? = {
        let base = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: base))?.compactMap(Int.init).sorted() ?? []
        return versions.last.map { "\(base)/\($0)/bin" }.flatMap { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") ? $0 : nil }
    }()
    static var available: Bool { binDir != nil }
    static let password = "pg-" + UUID().uuidString

    let dir: String
    let port: Int
    private(set) var child: ChildProcess?
    var uri: String { "postgresql://hookgate@127.0.0.1:\(port)/postgres" }

    init(dir: String) throws {
        guard let bin = Self.binDir else { throw HarnessError("no PostgreSQL server installed") }
        self.dir = dir + "/pg"
        port = RawHTTP.closedPort()
        try FileManager.default.createDirectory(atPath: self.dir, withIntermediateDirectories: true)
        let pwfile = self.dir + "/pwfile"
        try Self.password.write(toFile: pwfile, atomically: true, encoding: .utf8)
        if getuid() == 0 {
            try Self.run("/bin/chown", ["-R", "postgres:postgres", self.dir])
            try Self.run("/bin/chmod", ["755", dir])
        }
        try Self.run(bin + "/initdb", ["-D", self.dir + "/data", "-U", "hookgate", "--auth=scram-sha-256", "--pwfile=" + pwfile,
                                       "-E", "UTF8", "--no-sync"])
        try start()
    }

    /// Runs `executable` (as `postgres` when root) and waits; throws on a non-zero exit.
    private static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        let asPostgres = getuid() == 0 && !executable.hasPrefix("/bin/")
        process.executableURL = URL(fileURLWithPath: asPostgres ? "/usr/sbin/runuser" : executable)
        process.arguments = asPostgres ? ["-u", "postgres", "--", executable] + arguments : arguments
        process.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        process.standardError = err
        try process.run()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw HarnessError("\(executable) failed: \(String(decoding: message, as: UTF8.self).suffix(400))")
        }
    }

    func start() throws {
        guard let bin = Self.binDir else { return }
        let postgres = [bin + "/postgres", "-D", dir + "/data", "-p", String(port), "-k", dir + "/data",
                        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "logging_collector=off"]
        let (executable, arguments) = getuid() == 0 ? ("/usr/sbin/runuser", ["-u", "postgres", "--"] + postgres) : (postgres[0], Array(postgres.dropFirst()))
        let child = try ChildProcess(arguments: arguments, executable: executable)
        self.child = child
        try child.wait("PostgreSQL ready", seconds: 30) { child.stderrLines.contains { $0.contains("ready to accept connections") } }
    }

    /// Fast shutdown (SIGINT to the postmaster): sessions are cut, as in an outage.
    func stop() {
        guard let child, child.process.isRunning else { return }
        if let pid = (try? String(contentsOfFile: dir + "/data/postmaster.pid", encoding: .utf8))?.split(separator: "\n").first.flatMap({ Int32($0) }) {
            kill(pid, SIGINT)
        }
        child.waitForExit(seconds: 20)
        self.child = nil
    }

    /// `psql`-free query: the first column of each row, through libpq (as the gateway does).
    func query(_ sql: String, _ parameters: [String?] = []) throws -> [[String?]] {
        let pg = try PostgresConnection(uri: uri, password: Self.password)
        return try pg.execute(sql, parameters)
    }
}

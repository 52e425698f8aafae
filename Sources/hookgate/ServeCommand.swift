import ArgumentParser
import Foundation
import Hookgate

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the gateway.",
        discussion: """
            Logs one JSON line per request and per notable event on stderr; the first line,
            "listening", names the bound ports. SIGHUP reloads the config file, SIGTERM or
            SIGINT drains calls in flight and exits 0.
            """)

    @Option(help: "The JSON configuration file.") var config: String

    func run() throws {
        HookgateLogging.bootstrap()
        let code = Gateway.serve(configPath: config)
        if code != 0 { throw ExitCode(code) }
    }
}

struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file without starting (reads no secrets).",
        discussion: "Exit 0 with a one-line summary, or 1 listing every problem with its JSON path.")

    @Option(help: "The JSON configuration file.") var config: String

    func run() throws {
        do {
            let parsed = try GatewayConfig.load(path: config)
            print("\(config): \(parsed.summary)")
        } catch {
            let problems = error.problems
            FileHandle.standardError.write(Data((problems.map { "\($0)\n" }.joined()).utf8))
            FileHandle.standardError.write(Data("\(config): \(problems.count) problem\(problems.count == 1 ? "" : "s")\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a new random team key and print it with its SHA-256.",
        discussion: "Give the key to the team; put only key_sha256 into the team's \"key_sha256\" list.")

    func run() throws {
        let made = KeyGen.make()
        print(KeyGen.report(key: made.key, sha256: made.sha256), terminator: "")
    }
}

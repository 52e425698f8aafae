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
        abstract: "Make a new random team key and print it with its SHA-256 (or, with --audit-signing-key, the audit's signing key pair).",
        discussion: """
            Give the key to the team; put only key_sha256 into the team's "key_sha256" list.
            With --audit-signing-key DIR: writes DIR/audit-signing.key.pem (Ed25519 private key,
            mode 0600: the gateway's audit.signing_key) and DIR/audit-signing.pub.pem (for
            `hookgate audit verify --public-key`, to keep apart from the gateway), and prints the
            public key's fingerprint. Never overwrites a file.
            """)

    @Option(help: ArgumentHelp("Write an Ed25519 key pair for signing audit checkpoints into this directory.", valueName: "dir"))
    var auditSigningKey: String?

    func run() throws {
        guard let dir = auditSigningKey else {
            let made = KeyGen.make()
            print(KeyGen.report(key: made.key, sha256: made.sha256), terminator: "")
            return
        }
        let privatePath = dir + "/audit-signing.key.pem", publicPath = dir + "/audit-signing.pub.pem"
        for path in [privatePath, publicPath] where FileManager.default.fileExists(atPath: path) {
            throw AuditOutput.fail("\(path) exists: not overwritten")
        }
        do {
            let key = try AuditSigningKey.generate()
            let pem = try key.pem()
            // Created here, never over an existing file; the umask can only narrow the mode.
            for (text, path, mode) in [(pem.privateKey, privatePath, 0o600), (pem.publicKey, publicPath, 0o644)] {
                if let problem = DurableWrite.write(text, to: path, exclusive: true, mode: mode) { throw AuditOutput.fail("\(path): \(problem)") }
            }
            print("private key: \(privatePath) (mode 0600; audit.signing_key)")
            print("public key:  \(publicPath) (hookgate audit verify --public-key)")
            print("fingerprint: \(key.fingerprint)")
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw AuditOutput.fail("\(error)")
        }
    }
}

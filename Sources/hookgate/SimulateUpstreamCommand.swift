import ArgumentParser
import Foundation
import Hookgate
import HookgateSimulator
import HookgateBench

struct SimulateUpstreamCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate-upstream",
        abstract: "Run the bundled HTTPS Hookshot simulator (for demos and tests).",
        discussion: "Serves POST /hooks/{hook_id}/requests/{request_id}/redeliver over HTTPS, and with --client-id the token endpoint POST /auth/token, and prints one JSON line per received request on stdout (Authorization reduced to a fingerprint). Outcomes for one call are chosen by the first 8 hex digits of its request id: 00000404 -> 404, 00000500 -> 500 (plain text), 00000401 -> 401, 00005100 -> slow, 0000c105 -> connection closed without an answer. SIGUSR1 makes the token endpoint fail (503), SIGUSR2 brings it back. See docs/simulator.md.")

    @Option(help: "Address to listen on.") var address = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port, printed on the first line).") var port = 0
    @Option(help: "Server certificate (PEM chain). With --key; otherwise a throwaway CA and certificate are made.")
    var cert: String?
    @Option(help: "Server private key (PEM).") var key: String?
    @Option(help: "Directory for the throwaway CA, certificate and key (default: a new temporary directory).")
    var pkiDir: String?
    @Option(help: "Also write the throwaway CA certificate to this file (for upstream.ca_file).")
    var caOut: String?
    @Option(name: .customLong("name"), help: "Subject alternative name of the throwaway certificate (repeatable).")
    var names: [String] = []
    @Option(help: "Environment variable holding the accepted service token.")
    var tokenEnv = "HOOKSHOT_SERVICE_TOKEN"
    @Option(help: "File holding the accepted service token (instead of --token-env).")
    var tokenFile: String?
    @Option(help: "The accepted service token itself (tests and demos only: visible in ps).")
    var token: String?
    @Option(help: "Outcome for every call: ok, 404, 500, 401, slow, close.")
    var mode = "ok"
    @Option(help: "Delay of the 'slow' outcome, in milliseconds.") var slowMs = 3000
    @Option(help: "OAuth2 client id accepted by POST /auth/token (enables the token endpoint).")
    var clientId: String?
    @Option(help: "Environment variable holding the accepted OAuth2 client secret.")
    var clientSecretEnv = "HOOKSHOT_CLIENT_SECRET"
    @Option(help: "The accepted OAuth2 client secret itself (tests and demos only: visible in ps).")
    var clientSecret: String?
    @Option(help: "expires_in of issued access tokens, in seconds.") var expiresIn = 43_200
    @Option(help: "Token endpoint behaviour: ok, fail, slow (SIGUSR1 -> fail, SIGUSR2 -> ok at run time).")
    var tokenMode = "ok"

    func validate() throws {
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
        if Simulator.Mode(rawValue: mode) == nil {
            throw ValidationError("--mode must be one of \(Simulator.Mode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if slowMs < 0 { throw ValidationError("--slow-ms must not be negative") }
        if expiresIn < 1 { throw ValidationError("--expires-in must be at least 1") }
        if Simulator.TokenMode(rawValue: tokenMode) == nil {
            throw ValidationError("--token-mode must be one of \(Simulator.TokenMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let token: String
        if let given = self.token {
            token = given
        } else if let tokenFile {
            guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
                throw ValidationError("cannot read --token-file \(tokenFile)")
            }
            token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        } else {
            token = ProcessInfo.processInfo.environment[tokenEnv] ?? ""
        }
        let clientSecret = self.clientSecret ?? ProcessInfo.processInfo.environment[clientSecretEnv] ?? ""
        if clientId != nil && clientSecret.isEmpty {
            throw ValidationError("--client-id needs a client secret in \(clientSecretEnv)")
        }
        guard !token.isEmpty || clientId != nil else {
            throw ValidationError("no service token to accept: set \(tokenEnv), pass --token-file, or use --client-id")
        }
        var certFile = cert ?? "", keyFile = key ?? ""
        var caFile = ""
        if cert == nil {
            let dir = pkiDir ?? (NSTemporaryDirectory() + "hookgate-sim-\(getpid())")
            let files = try Certificates.makeTestPKI(directory: dir, names: names.isEmpty ? ["localhost", "127.0.0.1"] : names)
            certFile = files.cert
            keyFile = files.key
            caFile = files.caCert
            if let caOut {
                try? FileManager.default.removeItem(atPath: caOut)
                try FileManager.default.copyItem(atPath: files.caCert, toPath: caOut)
                caFile = caOut
            }
        }
        var options = Simulator.Options(certFile: certFile, keyFile: keyFile, acceptedTokens: token.isEmpty ? [] : [token])
        options.clientID = clientId
        options.clientSecret = clientSecret
        options.expiresIn = expiresIn
        options.tokenMode = Simulator.TokenMode(rawValue: tokenMode) ?? .ok
        options.address = address
        options.port = port
        options.mode = Simulator.Mode(rawValue: mode) ?? .ok
        options.slowMs = slowMs
        try Simulator.run(options: options, announce: caFile.isEmpty ? [:] : ["ca_file": caFile])
    }
}

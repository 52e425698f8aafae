import Foundation

// Threads: any; token material is read at start and on the reload thread.

/// Reads secrets from where the config points (`{"env"}` or `{"file"}`). Secrets are kept
/// in memory only; they are never logged, echoed or stored.
public enum SecretLoader {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// `what` names the config key in messages, e.g. `upstream.service_token`.
    public static func read(_ source: SecretSource, what: String,
                            environment: [String: String] = [:]) throws -> String {
        let env = environment.isEmpty ? ProcessInfo.processInfo.environment : environment
        switch source {
        case .env(let name):
            guard let value = env[name] else {
                throw Failure(description: "\(what): environment variable \(name) is not set")
            }
            let secret = value.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !secret.isEmpty else { throw Failure(description: "\(what): environment variable \(name) is empty") }
            return try checked(secret, what: what, from: "environment variable \(name)")
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw Failure(description: "\(what): cannot read file \(path)")
            }
            let secret = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !secret.isEmpty else { throw Failure(description: "\(what): file \(path) is empty") }
            return try checked(secret, what: what, from: "file \(path)")
        }
    }

    /// A secret goes into a header line: refuse anything that could break it.
    private static func checked(_ secret: String, what: String, from origin: String) throws -> String {
        guard secret.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw Failure(description: "\(what): the value in \(origin) contains spaces or control characters")
        }
        return secret
    }
}

/// The secret material of `upstream.service_token`, read once at start (and on reload).
public enum ServiceTokenMaterial: Sendable {
    case staticToken(String)
    case oauth2(OAuth2Config, clientSecret: String)

    public static func load(_ source: ServiceTokenSource) throws -> ServiceTokenMaterial {
        switch source {
        case .env(let name):
            return .staticToken(try SecretLoader.read(.env(name), what: "upstream.service_token"))
        case .file(let path):
            return .staticToken(try SecretLoader.read(.file(path), what: "upstream.service_token"))
        case .oauth2(let config):
            return .oauth2(config, clientSecret: try SecretLoader.read(config.clientSecret,
                                                                       what: "upstream.service_token.oauth2.client_secret"))
        }
    }
}

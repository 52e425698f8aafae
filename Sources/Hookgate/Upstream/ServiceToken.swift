import Foundation

/// Reads the static service token (`{"env"}` or `{"file"}`). The token is kept in memory
/// only; it is never logged, echoed or stored.
public enum ServiceTokenLoader {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public static func load(_ source: ServiceTokenSource) throws -> String {
        try load(source, environment: ProcessInfo.processInfo.environment)
    }

    public static func load(_ source: ServiceTokenSource, environment: [String: String]) throws -> String {
        switch source {
        case .env(let name):
            guard let value = environment[name] else {
                throw Failure(description: "upstream.service_token: environment variable \(name) is not set")
            }
            let token = value.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else {
                throw Failure(description: "upstream.service_token: environment variable \(name) is empty")
            }
            return try checked(token, from: "environment variable \(name)")
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw Failure(description: "upstream.service_token: cannot read file \(path)")
            }
            let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else {
                throw Failure(description: "upstream.service_token: file \(path) is empty")
            }
            return try checked(token, from: "file \(path)")
        case .oauth2:
            throw Failure(description: "upstream.service_token: oauth2 is not supported by this version yet; use {\"env\": NAME} or {\"file\": PATH}")
        }
    }

    /// A token goes into a header line: refuse anything that could break it.
    private static func checked(_ token: String, from origin: String) throws -> String {
        guard token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw Failure(description: "upstream.service_token: the token in \(origin) contains spaces or control characters")
        }
        return token
    }
}

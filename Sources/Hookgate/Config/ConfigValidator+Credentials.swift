import Foundation

// Threads: any; runs at start and on the reload thread, never on the loop.

/// The validator's secrets (named, never read) and teams sections (GatewayConfig+Parse.swift
/// has the rest).
extension ConfigValidator {
    // MARK: - Secrets (named, never read)

    private static let inlineKeys: Set<String> = ["value", "token", "secret", "access_token", "client_secret"]

    func serviceToken(_ value: JSONTree?, path: String) -> ServiceTokenSource? {
        let inline = "an inline token is not allowed, use {\"env\": NAME} or {\"file\": PATH}"
        guard let value else {
            report(path, "is required: {\"env\": NAME}, {\"file\": PATH} or {\"oauth2\": {...}}")
            return nil
        }
        guard var o = sourceObject(value, path: path, inlineMessage: inline,
                                   shape: "{\"env\": NAME}, {\"file\": PATH} or {\"oauth2\": {...}}") else { return nil }
        defer { finish(o) }
        guard let kind = sourceKind(&o, allowed: ["env", "file", "oauth2"], inlineMessage: inline) else { return nil }
        switch kind {
        case "env": return envName(&o).map(ServiceTokenSource.env)
        case "file": return string(&o, "file").map(ServiceTokenSource.file)
        default: return section(&o, "oauth2") { oauth2(&$0) }.map(ServiceTokenSource.oauth2)
        }
    }

    func secret(_ value: JSONTree?, path: String) -> SecretSource? {
        let inline = "an inline secret is not allowed, use {\"env\": NAME} or {\"file\": PATH}"
        guard let value else {
            report(path, "is required: {\"env\": NAME} or {\"file\": PATH}")
            return nil
        }
        guard var o = sourceObject(value, path: path, inlineMessage: inline,
                                   shape: "{\"env\": NAME} or {\"file\": PATH}") else { return nil }
        defer { finish(o) }
        guard let kind = sourceKind(&o, allowed: ["env", "file"], inlineMessage: inline) else { return nil }
        return kind == "env" ? envName(&o).map(SecretSource.env) : string(&o, "file").map(SecretSource.file)
    }

    private func sourceObject(_ value: JSONTree, path: String, inlineMessage: String, shape: String) -> ObjectReader? {
        switch value {
        case .object(let members): return ObjectReader(members, path: path)
        case .string: report(path, inlineMessage)
        default: report(path, "must be an object: \(shape)")
        }
        return nil
    }

    /// Which one of `allowed` the source object uses; reports inline values and ambiguity.
    private func sourceKind(_ o: inout ObjectReader, allowed: [String], inlineMessage: String) -> String? {
        var inline = false
        for key in Self.inlineKeys.sorted() where o.has(key) {
            _ = o.take(key)
            inline = true
        }
        if inline { report(o.path, inlineMessage) }
        let present = allowed.filter { o.has($0) }
        guard present.count == 1, let kind = present.first else {
            if present.count > 1 || !inline {
                report(o.path, "must have exactly one of " + allowed.map { "\"\($0)\"" }.joined(separator: ", "))
            }
            for key in allowed { _ = o.take(key) }
            return nil
        }
        if inline {
            _ = o.take(kind)
            return nil
        }
        return kind
    }

    private func envName(_ o: inout ObjectReader) -> String? {
        guard let name = string(&o, "env") else { return nil }
        guard Self.isEnvironmentName(name) else {
            report(o.path(of: "env"), "must be an environment variable name (letters, digits and _, not starting with a digit)")
            return nil
        }
        return name
    }

    static func isEnvironmentName(_ s: String) -> Bool {
        guard let first = s.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return false }
        return s.utf8.allSatisfy { c in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) || c == UInt8(ascii: "_")
        }
    }

    private func oauth2(_ o: inout ObjectReader) -> OAuth2Config? {
        var endpoint: HTTPSURL?
        let tokenURL = string(&o, "token_url")
        if let tokenURL {
            switch HTTPSURL.parse(tokenURL, form: .withPath) {
            case .success(let u): endpoint = u
            case .failure(let m): report(o.path(of: "token_url"), m.text)
            }
        }
        let clientID = string(&o, "client_id")
        let secret = secret(o.take("client_secret"), path: o.path(of: "client_secret"))
        let timeout = integer(&o, "timeout_ms", default: 5000, range: ConfigBounds.connectTimeoutMs)
        let refreshAt = integer(&o, "refresh_at_percent", default: 50, range: ConfigBounds.refreshAtPercent)
        let retryMax = integer(&o, "retry_max_ms", default: 5000, range: ConfigBounds.tokenRetryMaxMs)
        let margin = integer(&o, "expiry_margin_ms", default: 60_000, range: ConfigBounds.expiryMarginMs)
        guard let tokenURL, let endpoint, let clientID, let secret, let timeout, let refreshAt, let retryMax, let margin
        else { return nil }
        return OAuth2Config(tokenURL: tokenURL, tokenEndpoint: endpoint, clientID: clientID, clientSecret: secret,
                            timeoutMs: timeout, refreshAtPercent: refreshAt, retryMaxMs: retryMax, expiryMarginMs: margin)
    }

    // MARK: - Teams

    func teamList(_ value: JSONTree?, path: String) -> [TeamConfig]? {
        guard let value else { return [] }
        guard case .array(let items) = value else {
            report(path, "must be a list, not \(value.kind)")
            return nil
        }
        var teams: [TeamConfig] = []
        var ok = true
        var nameSeenAt: [String: String] = [:]
        var hashSeenAt: [String: (team: String, path: String)] = [:]
        for (index, item) in items.enumerated() {
            let teamPath = JSONPath.element(path, index)
            guard var o = objectReader(item, path: teamPath) else { ok = false; continue }
            let team = self.team(&o)
            finish(o)
            guard let team else { ok = false; continue }
            if let first = nameSeenAt[team.name] {
                report(o.path(of: "name"), "duplicate team name \"\(team.name)\" (also \(first))")
                ok = false
            } else {
                nameSeenAt[team.name] = o.path(of: "name")
            }
            for (i, hash) in team.keySHA256.enumerated() {
                let hashPath = JSONPath.element(o.path(of: "key_sha256"), i)
                if let first = hashSeenAt[hash] {
                    let owner = first.team == team.name ? "" : " of team \"\(first.team)\""
                    report(hashPath, "duplicate key hash (also \(first.path)\(owner))")
                    ok = false
                } else {
                    hashSeenAt[hash] = (team.name, hashPath)
                }
            }
            teams.append(team)
        }
        return ok ? teams : nil
    }

    private func team(_ o: inout ObjectReader) -> TeamConfig? {
        var name = string(&o, "name")
        if let n = name, !(ConfigBounds.teamNameLength.contains(n.utf8.count) && n.utf8.allSatisfy(Self.isNameByte)) {
            report(o.path(of: "name"), "must be 1 to 64 characters from A-Z a-z 0-9 . _ -")
            name = nil
        }
        let keys = keyHashes(o.take("key_sha256"), path: o.path(of: "key_sha256"))
        let allow = allowList(o.take("allow_hooks"), path: o.path(of: "allow_hooks"))
        let limit = optionalSection(&o, "rate_limit") { rateLimit(&$0) }
        guard let name, let keys, let allow, let limit else { return nil }
        return TeamConfig(name: name, keySHA256: keys, allowHooks: allow, rateLimit: limit.value)
    }

    private static func isNameByte(_ c: UInt8) -> Bool {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
            || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    private func keyHashes(_ value: JSONTree?, path: String) -> [String]? {
        guard let value else {
            report(path, "is required: a list of SHA-256 hashes of the team's keys (see hookgate keygen)")
            return nil
        }
        guard case .array(let items) = value else {
            report(path, "must be a list, not \(value.kind)")
            return nil
        }
        guard !items.isEmpty else {
            report(path, "must list at least one key hash")
            return nil
        }
        var hashes: [String] = []
        var ok = true
        for (i, item) in items.enumerated() {
            guard case .string(let s) = item, s.utf8.count == 64, s.utf8.allSatisfy(Self.isHexByte) else {
                report(JSONPath.element(path, i), "must be a SHA-256 hash: 64 hex characters")
                ok = false
                continue
            }
            hashes.append(s.lowercased())
        }
        return ok ? hashes : nil
    }

    private static func isHexByte(_ c: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(c)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(c)
    }

    private func allowList(_ value: JSONTree?, path: String) -> AllowList? {
        // Left out: no hook (default deny), like an empty list.
        guard let value else { return AllowList.hooks([]) }
        guard case .array(let items) = value else {
            report(path, "must be a list, not \(value.kind)")
            return nil
        }
        var ids: Set<String> = []
        var star = false
        var ok = true
        for (i, item) in items.enumerated() {
            if case .string("*") = item {
                star = true
                continue
            }
            guard case .string(let s) = item, let id = UUIDText.canonical(s) else {
                report(JSONPath.element(path, i), "must be a hook UUID (8-4-4-4-12 hex) or \"*\"")
                ok = false
                continue
            }
            ids.insert(id)
        }
        if star {
            if items.count != 1 {
                report(path, "\"*\" must be the only entry (it already allows every hook)")
                return nil
            }
            return .all
        }
        return ok ? .hooks(ids) : nil
    }
}

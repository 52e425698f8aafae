import Foundation
import Logging

// Threads: `reload` starts on the loop, reads the file on a thread of its own, `applyReload` runs on the loop.

/// SIGHUP: the file is read and validated off the loop, then applied on it as a whole, or not at all.
extension Gateway {
    /// SIGHUP: read and validate the file off the loop, then swap the policy on it.
    func reload() {
        let path = configPath
        let loop = self.loop
        // Only read back on the loop (in `loop.execute` below): never off it.
        let bound = LoopBound(self, on: loop)
        Thread.detachNewThread {
            let result: Result<Reloaded, ConfigError>
            do throws(ConfigError) {
                let config = try GatewayConfig.load(path: path)
                // A token or secret file is re-read; an unreadable one rejects the reload.
                let material: ServiceTokenMaterial
                do {
                    material = try ServiceTokenMaterial.load(config.upstream.serviceToken)
                } catch {
                    throw ConfigError(problems: [ConfigProblem(path: "upstream.service_token", message: "\(error)")])
                }
                var listenTLS: TLSServerContext? = nil
                if let files = config.listen.tls {
                    do {
                        listenTLS = try TLSServerContext(certFile: files.certFile, keyFile: files.keyFile)
                    } catch {
                        throw ConfigError(problems: [ConfigProblem(path: "listen.tls", message: "\(error)")])
                    }
                }
                result = .success(Reloaded(config: config, material: material, listenTLS: listenTLS))
            } catch {
                result = .failure(error)
            }
            loop.execute { bound.value.applyReload(result) }
        }
    }

    struct Reloaded: Sendable {
        var config: GatewayConfig
        var material: ServiceTokenMaterial
        var listenTLS: TLSServerContext?
    }

    func applyReload(_ result: Result<Reloaded, ConfigError>) {
        switch result {
        case .failure(let error):
            metrics.countReload(ok: false)
            for problem in error.problems {
                logger.error("reload rejected: invalid configuration, the old one stays in force",
                             metadata: ["config.path": "\(problem.path)", "problem": "\(problem.message)"])
            }
        case .success(let reloaded):
            let newConfig = reloaded.config
            var restart: [String] = []
            if newConfig.listen != config.listen { restart.append("listen") }
            if newConfig.admin != config.admin { restart.append("admin") }
            if newConfig.sharedLimits != config.sharedLimits { restart.append("shared_limits") }
            if newConfig.audit.path != config.audit.path { restart.append("audit.path") }
            var auditKept = newConfig.audit
            auditKept.path = config.audit.path
            if auditKept != config.audit { restart.append("audit") }
            // Every upstream setting but the token source (handled below) is fixed at start.
            var upstreamKept = newConfig.upstream
            upstreamKept.serviceToken = config.upstream.serviceToken
            if upstreamKept != config.upstream { restart.append("upstream") }
            let sameTokenKind: Bool
            switch (newConfig.upstream.serviceToken, config.upstream.serviceToken) {
            case (.oauth2(let a), .oauth2(let b)): sameTokenKind = a.tokenURL == b.tokenURL && a.clientID == b.clientID
            case (.oauth2, _), (_, .oauth2): sameTokenKind = false
            default: sameTokenKind = true
            }
            if !sameTokenKind { restart.append("upstream.service_token") }
            guard restart.isEmpty else {
                // Applying the rest would run a mix of two files under one config_version:
                // the whole file waits for a restart, and the audit keeps naming the file in force.
                metrics.countReload(ok: false)
                logger.error("reload rejected: these settings change only with a restart; the old configuration stays in force",
                             metadata: ["needs_restart": "\(restart.joined(separator: ","))",
                                        "config.version": "\(config.version)", "file.version": "\(newConfig.version)"])
                return
            }
            tokens.replace(reloaded.material)
            // A renewed listener certificate applies to new connections.
            if let tls = reloaded.listenTLS, newConfig.listen.tls != nil { server?.replaceTLS(tls) }
            let newPolicy = Policy(config: newConfig)
            limiter = limiter.reconfigured(for: newPolicy)
            policy = newPolicy
            if newConfig.limits != config.limits { server?.update(Self.listenerLimits(newConfig.limits)) }
            config = newConfig
            metrics.countReload(ok: true)
            logger.info("configuration reloaded", metadata: [
                "config.version": "\(newConfig.version)", "teams": .stringConvertible(newConfig.teams.count)])
        }
    }
}

// Threads: any (an immutable snapshot); used on the loop.

/// The policy snapshot of one configuration: who the teams are, which keys are theirs, what
/// they may redeliver and at what rate. Immutable; a reload builds a new one.
public struct Policy: Sendable, Equatable {
    public struct Team: Sendable, Equatable {
        public var name: String
        public var allowHooks: AllowList
        public var rateLimit: RateLimitConfig?

        public init(name: String, allowHooks: AllowList, rateLimit: RateLimitConfig?) {
            self.name = name
            self.allowHooks = allowHooks
            self.rateLimit = rateLimit
        }
    }

    /// Teams by name.
    public let teams: [String: Team]
    public let globalRateLimit: RateLimitConfig?
    /// `config_version` of the configuration this policy came from.
    public let configVersion: String
    /// Team names by the lower-case hex SHA-256 of each of their keys. Looking a presented key
    /// up by its hash reveals nothing about the key through timing.
    private let teamByKeyHash: [String: String]

    /// Assumes a validated configuration (unique team names and key hashes); were a hash listed
    /// twice anyway, the first team listing it would own it.
    public init(config: GatewayConfig) {
        var teams: [String: Team] = [:]
        var byHash: [String: String] = [:]
        for team in config.teams {
            teams[team.name] = Team(name: team.name, allowHooks: team.allowHooks, rateLimit: team.rateLimit)
            for hash in team.keySHA256 where byHash[hash.lowercased()] == nil {
                byHash[hash.lowercased()] = team.name
            }
        }
        self.teams = teams
        self.teamByKeyHash = byHash
        self.globalRateLimit = config.globalRateLimit
        self.configVersion = config.version
    }

    /// The team whose key has this SHA-256 (lower-case hex), if any.
    public func team(forKeySHA256 hash: String) -> Team? {
        guard let name = teamByKeyHash[hash] else { return nil }
        return teams[name]
    }
}

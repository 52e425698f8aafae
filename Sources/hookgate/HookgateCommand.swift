import ArgumentParser
import Hookgate

struct HookgateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hookgate",
        abstract: "The gateway in front of Hookshot's redeliver endpoint.",
        // `hookgate --version` (scripts/package-deb names the Debian package after it).
        version: BuildInfo.version,
        subcommands: [ServeCommand.self, CheckConfigCommand.self, KeygenCommand.self, AuditCommand.self, SimulateUpstreamCommand.self,
                      BenchAuditCommand.self, GenerateAuditCommand.self])
}

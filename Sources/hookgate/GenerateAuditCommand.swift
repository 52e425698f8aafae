import ArgumentParser
import Foundation
import Hookgate
import HookgateBench

struct GenerateAuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-audit",
        abstract: "Write a large audit database shaped like real traffic (see bench/AUDIT.md).",
        discussion: """
            For measuring queries, reports and `audit verify` at the size of a year of traffic:
            --calls calls spread evenly over --days days from --start, by --teams teams over
            --hooks hooks, with the gateway's schema and hash chain (the file verifies) and a
            production-like mix of decisions. The same --seed writes the same file.
            """,
        shouldDisplay: false)

    @Option(help: ArgumentHelp("The database to create (must not exist).", valueName: "file")) var out: String
    @Option(help: "Calls (request/response pairs).") var calls = 1_000_000
    @Option(help: "Days the calls are spread over.") var days = 90
    @Option(help: "Teams.") var teams = 20
    @Option(help: "Hooks, shared out among the teams.") var hooks = 2000
    @Option(help: "Seed of the generator.") var seed: UInt64 = 1
    @Option(help: ArgumentHelp("First day, UTC (YYYY-MM-DD).", valueName: "date")) var start = "2025-01-01"

    func validate() throws {
        if calls < 1 { throw ValidationError("--calls must be at least 1") }
        if days < 1 { throw ValidationError("--days must be at least 1") }
        if teams < 1 { throw ValidationError("--teams must be at least 1") }
        if hooks < teams { throw ValidationError("--hooks must be at least --teams (each team has hooks of its own)") }
        if Self.day(start) == nil { throw ValidationError("--start: \"\(start)\" is not YYYY-MM-DD") }
        if FileManager.default.fileExists(atPath: out) { throw ValidationError("--out: \(out) exists; choose a new file") }
    }

    static func day(_ text: String) -> Date? {
        let p = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.count == 10, p.count == 3, let y = Int(p[0]), let m = Int(p[1]), let d = Int(p[2]),
              (1970...9999).contains(y), (1...12).contains(m), (1...31).contains(d) else { return nil }
        var parts = tm()
        parts.tm_year = Int32(y - 1900)
        parts.tm_mon = Int32(m - 1)
        parts.tm_mday = Int32(d)
        let seconds = timegm(&parts)
        guard parts.tm_mday == Int32(d) else { return nil }  // 2025-02-30 rolled over
        return Date(timeIntervalSince1970: TimeInterval(seconds))
    }

    func run() throws {
        let options = AuditGenerator.Options(calls: calls, days: days, teams: teams, hooks: hooks, seed: seed,
                                             start: Self.day(start)!)
        let meter = isatty(STDERR_FILENO) == 1
        let summary: AuditGenerator.Summary
        do {
            summary = try AuditGenerator.generate(path: out, options: options) { done, total in
                if meter { FileHandle.standardError.write(Data("\r\u{1B}[Kwriting: \(done) of \(total) calls".utf8)) }
            }
        } catch {
            if meter { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            throw AuditOutput.fail(error.description)
        }
        if meter { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        print("wrote \(out): \(summary.calls) calls, \(summary.records) records, "
              + String(format: "%.2f GiB in %.0f s", Double(size) / 1_073_741_824, summary.seconds))
        for (decision, n) in summary.decisions.sorted(by: { $0.value > $1.value }) {
            let name = decision.padding(toLength: 20, withPad: " ", startingAt: 0)
            print("  " + name + String(format: "%10d  %5.2f %%", n, 100 * Double(n) / Double(summary.calls)))
        }
    }
}

import ArgumentParser
import Foundation
import Hookgate
import HookgateSimulator
import HookgateBench

struct BenchAuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-audit",
        abstract: "Benchmark the audit write path alone (see bench/AUDIT.md).",
        discussion: """
            Commits request/response pairs of realistic audit records, each run on a fresh database
            in --dir: through the gateway's audit writer with group commit on, the same with group
            commit off (one transaction per record), and the ceiling (the same rows, columns and
            hash chain inserted by one connection in one transaction, same pragmas). Prints pairs/s
            and the ratio to the ceiling measured in this one run, and verifies every chain.
            """,
        shouldDisplay: false)

    @Option(help: ArgumentHelp("Where to create the throwaway databases (default: a new temporary directory).",
                               valueName: "dir"))
    var dir: String?
    @Option(help: "Request/response pairs for group commit on and for the ceiling.") var pairs = 20_000
    @Option(help: ArgumentHelp("Pairs for group commit off (default: --pairs; lower it on a disk with slow fsync).",
                               valueName: "n"))
    var offPairs: Int?
    @Option(help: "Callers with a pair in flight at once.") var concurrency = 64
    @Option(help: "synchronous=FULL (fsync per commit) or NORMAL: full, normal.") var durability = "full"
    @Flag(help: "Keep the databases (default: removed after the run).") var keep = false

    func validate() throws {
        if pairs < 1 { throw ValidationError("--pairs must be at least 1") }
        if let offPairs, offPairs < 1 { throw ValidationError("--off-pairs must be at least 1") }
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if Durability(rawValue: durability) == nil {
            throw ValidationError("--durability must be one of \(Durability.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let durability = Durability(rawValue: durability)!
        let directory: String
        var madeDirectory = false
        if let dir {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            directory = dir
        } else {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("hookgate-bench-audit-\(getpid())").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            madeDirectory = true
        }
        let offPairs = offPairs ?? pairs

        print("bench-audit: durability \(durability.rawValue), concurrency \(concurrency), "
              + "upstream body ~\(AuditBenchmark.sampleBodyBytes) bytes, dir \(directory)")
        print("pairs: \(pairs) (ceiling, group commit on), \(offPairs) (group commit off)")

        let runs: [(name: String, mode: AuditBenchmark.Mode, pairs: Int)] = [
            ("ceiling: 1 transaction", .oneTransaction, pairs),
            ("group commit on", .writer(maxBatch: 1024, concurrency: concurrency), pairs),
            ("group commit off", .writer(maxBatch: 1, concurrency: concurrency), offPairs),
        ]
        var results: [(name: String, outcome: AuditBenchmark.Outcome, file: String)] = []
        for (index, run) in runs.enumerated() {
            let file = (directory as NSString).appendingPathComponent("audit-\(index + 1)-\(durability.rawValue).sqlite")
            do {
                let outcome = try AuditBenchmark.run(run.mode, path: file, pairs: run.pairs, durability: durability)
                results.append((run.name, outcome, file))
            } catch {
                throw AuditOutput.fail("\(run.name): \(error.description)")
            }
        }

        let ceiling = results[0].outcome.pairsPerSecond
        func pad(_ s: String, _ width: Int, right: Bool = true) -> String {
            let fill = String(repeating: " ", count: max(0, width - s.count))
            return right ? fill + s : s + fill
        }
        print(pad("mode", 24, right: false) + pad("pairs", 8) + pad("seconds", 10) + pad("pairs/s", 10)
              + pad("vs ceiling", 12) + pad("commits", 9) + pad("records/commit", 16) + "  chain")
        for (name, o, _) in results {
            print(pad(name, 24, right: false) + pad("\(o.pairs)", 8) + pad(String(format: "%.3f", o.seconds), 10)
                  + pad(String(format: "%.0f", o.pairsPerSecond), 10)
                  + pad(String(format: "%.3f", ceiling > 0 ? o.pairsPerSecond / ceiling : 0), 12)
                  + pad("\(o.commits)", 9) + pad(String(format: "%.1f", o.recordsPerCommit), 16)
                  + "  " + (o.chainProblem.map { "BROKEN: \($0)" } ?? "OK"))
        }
        let on = results[1].outcome, off = results[2].outcome
        let commitWord = durability == .full ? "fsyncs" : "commits"
        let avoided = on.records > 0 ? 100 * (1 - Double(on.commits) / Double(on.records)) : 0
        let speedup = off.pairsPerSecond > 0 ? on.pairsPerSecond / off.pairsPerSecond : 0
        print("group commit on: \(String(format: "%.1f", on.recordsPerCommit)) records per commit on average, so "
              + "\(String(format: "%.1f", avoided))% of \(commitWord) avoided (\(on.commits) instead of \(on.records)); "
              + "\(String(format: "%.1f", speedup))x the pairs/s of group commit off")
        print("derived data (summaries, lookup): \(on.derivedBatches) batches written with group commit on, "
              + "the slowest in \(String(format: "%.1f", on.slowestDerivedBatch * 1000)) ms")

        if !keep {
            for result in results { AuditBenchmark.removeDatabase(at: result.file) }
            if madeDirectory { try? FileManager.default.removeItem(atPath: directory) }
        }
        if results.contains(where: { $0.outcome.chainProblem != nil }) { throw ExitCode(1) }
    }
}

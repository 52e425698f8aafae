import Foundation
import HookgateTestSupport
import Testing
@testable import Hookgate

/// `audit.rotate` in the config, the daily rule on the writer's file, and rotated files' names.
@Suite struct AuditRotationUnitTests {
    @Test func rotateIsParsedAndEachProblemNamed() throws {
        let both = try parsed(minimal(audit: #""path": "/a", "rotate": {"max_bytes": 1073741824, "daily": true}"#))
        #expect(both.audit.rotate == AuditRotation(maxBytes: 1 << 30, daily: true))
        #expect(try parsed(minimal(audit: #""path": "/a", "rotate": {"daily": true}"#)).audit.rotate == AuditRotation(maxBytes: nil, daily: true))
        #expect(try parsed(minimal()).audit.rotate == nil)
        #expect(problems(minimal(audit: #""path": "/a", "rotate": {"max_bytes": 1000, "daily": "yes"}"#)) == [
            "audit.rotate.max_bytes: must be at least 4096", "audit.rotate.daily: must be true or false, not a string",
        ])
        #expect(problems(minimal(audit: #""path": "/a", "rotate": {}"#)) == [
            "audit.rotate: must name \"max_bytes\" (bytes) and/or \"daily\": true",
        ])
        #expect(problems(minimal(audit: #""path": "/a", "rotate": {"daily": false, "hourly": true}"#)) == [
            "audit.rotate: rotates never with \"daily\": false and no \"max_bytes\": set one, or remove the key",
            "audit.rotate.hourly: unknown key",
        ])
    }

    @Test func dailyRotatesOnceTheUTCDateChangesAndOnlyAFileWithRecords() throws {
        let dir = TestDirectory.make("rotate-daily")
        let path = dir + "/audit.sqlite3"
        let file = try AuditFile(config: AuditConfig(path: path, rotate: AuditRotation(daily: true)))
        let tomorrow = Date().addingTimeInterval(86_400)
        guard case .success(.notDue) = file.rotateIfDue(AuditRotation(daily: true), now: tomorrow, beforeSealing: {}) else {
            Issue.record("a file without records was rotated")
            return
        }
        #expect((try? file.commit([.request(AuditFileTests.record())]).get()) != nil)
        guard case .success(.notDue) = file.rotateIfDue(AuditRotation(daily: true), now: Date(), beforeSealing: {}) else {
            Issue.record("rotated on the day it was started")
            return
        }
        var signed = false
        guard case .success(.rotated(let archive, 1, 1)) = file.rotateIfDue(AuditRotation(daily: true), now: tomorrow, beforeSealing: { signed = true }) else {
            Issue.record("not rotated the next day")
            return
        }
        #expect(signed)
        let day = String(Timestamp.rfc3339(tomorrow).prefix(10)).filter { $0 != "-" }
        #expect(archive == dir + "/audit-000000000001-000000000001-\(day).sqlite3")
        #expect((try? file.commit([.request(AuditFileTests.record())]).get()) != nil)
        file.close()
        let live = try SQLiteConnection(path: path, readOnly: true)
        let segment = try AuditSegment.read(live)
        #expect(segment.firstSeq == 2 && segment.previousFile == (archive as NSString).lastPathComponent && !segment.isSealed)
        #expect(try live.scalarInt("SELECT seq FROM audit_requests") == 2)
        let set = try AuditFileSet([dir])
        let verified = try set.verify()
        #expect(verified.broken == nil && verified.records == 2 && verified.lastSeq == 2)
    }

    @Test func rotatedNamesSortInChainOrderAndParseBack() {
        let name = AuditSegment.archiveName(path: "/var/lib/hookgate/audit.sqlite3", first: 1, last: 52_341, day: "2026-12-01")
        #expect(name == "audit-000000000001-000000052341-20261201.sqlite3")
        #expect(AuditRotatedFiles.range(of: name, stem: "audit", ext: "sqlite3") == 1...52_341)
        #expect(AuditSegment.archiveName(path: "journal", first: 7, last: 9, day: "2026-01-02") == "journal-000000000007-000000000009-20260102")
        #expect(AuditRotatedFiles.range(of: "audit.sqlite3", stem: "audit", ext: "sqlite3") == nil)
        #expect(AuditRotatedFiles.range(of: "audit-1-2-20261201.sqlite3", stem: "audit", ext: "sqlite3") == nil)
    }
}

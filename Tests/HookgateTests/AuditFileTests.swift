import Foundation
import HookgateTestSupport
import Testing
@testable import Hookgate

/// The writer thread's view of the audit file: the checks before each group, and errors that
/// say what happened (not borrowed SQLite codes).
@Suite struct AuditFileTests {
    static func tempPath() -> String {
        TestDirectory.make("auditfile") + "/audit.sqlite3"
    }

    @Test func aReadOnlyFileIsNotWritableAndRecoversWhenWritableAgain() throws {
        let path = Self.tempPath()
        let file = try AuditFile(config: AuditConfig(path: path))
        #expect(file.probe() == nil)
        try FileManager.default.setAttributes([.posixPermissions: 0o444], ofItemAtPath: path)
        let error = try #require(file.probe())
        #expect(error.kind == .notWritable)
        #expect(error.resultCode == nil)
        #expect(error.description.contains("read-only") || error.description.contains("not writable"))
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: path)
        #expect(file.probe() == nil)
    }

    @Test func aReplacedFileIsNamedAndANewOneStarted() throws {
        let path = Self.tempPath()
        let file = try AuditFile(config: AuditConfig(path: path))
        #expect((try? file.commit([.request(Self.record())]).get()) != nil)
        try FileManager.default.removeItem(atPath: path)
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let error = try #require(file.probe())
        #expect(error.kind == .fileReplaced)
        #expect(file.probe() == nil, "the next check opens the new file")
        #expect((try? file.commit([.request(Self.record())]).get()) != nil)
    }

    @Test func sqliteFailuresKeepTheirResultCode() throws {
        let path = Self.tempPath()
        let file = try AuditFile(config: AuditConfig(path: path))
        let record = Self.record()
        #expect((try? file.commit([.request(record)]).get()) != nil)
        // The same request id twice: SQLite's UNIQUE constraint (extended code 2067).
        guard case .failure(let error) = file.commit([.request(record)]) else {
            Issue.record("a duplicate request id was accepted")
            return
        }
        #expect(error.kind == .sqlite(resultCode: 2067))
        #expect(error.primaryResultCode == 19)  // SQLITE_CONSTRAINT
        #expect(error.sql?.hasPrefix("INSERT INTO audit_requests") == true)
    }

    static func record() -> AuditRequestRecord {
        AuditRequestRecord(requestID: RequestID.make(), receivedAt: Timestamp.rfc3339(Date()), clientAddr: "127.0.0.1",
                           team: "claims", keyFingerprint: "0123456789abcdef", method: "POST", path: "/x", hookID: nil,
                           eventRequestID: nil, decision: "not_found", userAgent: nil, clientRequestID: nil,
                           configVersion: String(repeating: "0", count: 64))
    }
}

import Foundation
import Testing
@testable import Hookgate

/// `audit.ship` as check-config reads it, and COPY's text format.
@Suite struct AuditShipConfigTests {
    @Test func readsTheKeysAndDefaultsTheReplicaToTheHostName() throws {
        let config = try parsed(minimal(audit: #""path": "/tmp/a.sqlite3", "ship": {"postgres": "postgresql://hookgate@db.internal:5432/audit", "password": {"env": "PG_PW"}, "replica": "gw-1"}"#))
        #expect(config.audit.ship == AuditShipConfig(postgres: "postgresql://hookgate@db.internal:5432/audit", password: .env("PG_PW"), replica: "gw-1"))
        let defaulted = try parsed(minimal(audit: #""path": "/tmp/a.sqlite3", "ship": {"postgres": "postgres://db/audit"}"#))
        #expect(defaulted.audit.ship?.replica == AuditShipConfig.defaultReplica)
        #expect(AuditShipConfig.isReplicaName(AuditShipConfig.defaultReplica))
        #expect(try parsed(minimal()).audit.ship == nil)
    }

    @Test func refusesPasswordsInTheURIAndBadNames() {
        #expect(problems(minimal(audit: #""path": "/a", "ship": {"postgres": "postgresql://hookgate:s3cret@db/audit"}"#)) == [
            "audit.ship.postgres: must not hold a password: use \"password\": {\"env\": NAME} or {\"file\": PATH}",
        ])
        #expect(problems(minimal(audit: #""path": "/a", "ship": {"postgres": "postgresql://db/audit?password=x"}"#)).count == 1)
        #expect(problems(minimal(audit: #""path": "/a", "ship": {"postgres": "mysql://db/audit", "replica": "gw 1"}"#)) == [
            "audit.ship.postgres: must be a postgresql:// URI",
            "audit.ship.replica: must be 1 to 64 characters from A-Z a-z 0-9 . _ -",
        ])
        #expect(problems(minimal(audit: #""path": "/a", "ship": {"replica": "gw-1", "password": "x"}"#)) == [
            "audit.ship.postgres: is required",
            "audit.ship.password: an inline secret is not allowed, use {\"env\": NAME} or {\"file\": PATH}",
        ])
    }

    @Test func copyFieldsEscapeWhatCOPYWouldRead() {
        func text(_ value: SQLValue) -> String { String(decoding: ShipBatch.field(value), as: UTF8.self) }
        #expect(text(.null) == #"\N"#)
        #expect(text(.int(-42)) == "-42")
        #expect(text(.double(0.001)) == "0.001")
        #expect(text(.text("a\tb\nc\\d\re")) == #"a\tb\nc\\d\re"#)
        #expect(text(.blob([0x00, 0xff, 0x10])) == #"\\x00ff10"#)
    }
}

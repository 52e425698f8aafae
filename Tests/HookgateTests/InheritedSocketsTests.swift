import Foundation
import Testing
@testable import Hookgate

/// The sd_listen_fds protocol as systemd and `systemd-socket-activate` speak it (the sockets
/// themselves are exercised end to end in SocketActivationTests).
@Suite struct InheritedSocketsTests {

    func parse(_ environment: [String: String], pid: Int32 = 42) throws(InheritedSockets.Problem) -> InheritedSockets? {
        try InheritedSockets.parse(environment, pid: pid)?.0
    }

    @Test func noVariablesOrAnotherProcessMeansNoSockets() throws {
        #expect(try parse([:]) == nil)
        #expect(try parse(["LISTEN_FDS": "1", "LISTEN_PID": "41"]) == nil, "meant for another process")
    }

    @Test func positionalMainFirstAdminSecond() throws {
        #expect(try parse(["LISTEN_FDS": "1", "LISTEN_PID": "42"]) == InheritedSockets(main: 3, admin: nil))
        #expect(try parse(["LISTEN_FDS": "2", "LISTEN_PID": "42"]) == InheritedSockets(main: 3, admin: 4))
        // A socket unit's default name (its own name) is not a role: position decides.
        #expect(try parse(["LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "hookgate.socket:hookgate.socket"])
                == InheritedSockets(main: 3, admin: 4))
    }

    @Test func namesDecideWhenGiven() throws {
        #expect(try parse(["LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "admin:main"]) == InheritedSockets(main: 4, admin: 3))
        #expect(try parse(["LISTEN_FDS": "1", "LISTEN_PID": "42", "LISTEN_FDNAMES": "admin"]) == InheritedSockets(main: nil, admin: 3))
    }

    @Test func refusesWhatItCannotServe() {
        func problem(_ environment: [String: String]) -> String? {
            do {
                _ = try parse(environment)
                return nil
            } catch { return error.description }
        }
        #expect(problem(["LISTEN_FDS": "1"]) == "LISTEN_FDS is set but LISTEN_PID is missing or not a number")
        #expect(problem(["LISTEN_FDS": "3", "LISTEN_PID": "42"]) == "LISTEN_FDS=3: expected 1 (main listener) or 2 (main, then admin)")
        #expect(problem(["LISTEN_FDS": "x", "LISTEN_PID": "42"]) == "LISTEN_FDS=x: expected 1 (main listener) or 2 (main, then admin)")
        #expect(problem(["LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "main:metrics"])
                == "inherited socket 4 is named \"metrics\": with names, each socket must be \"main\" or \"admin\", once (FileDescriptorName=)")
        #expect(problem(["LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "main:main"]) != nil)
    }

    @Test func checksTheDescriptorIsAListeningStreamSocket() throws {
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        defer { pipeFDs.forEach { close($0) } }
        #expect(throws: InheritedSockets.Problem.self) { try InheritedSockets.check(pipeFDs[0]) }

        let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(udp) }
        #expect(throws: InheritedSockets.Problem(description: "inherited socket \(udp) is not a stream socket (ListenStream=)")) {
            try InheritedSockets.check(udp)
        }
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(tcp) }
        #expect(throws: InheritedSockets.Problem(description: "inherited socket \(tcp) is not listening")) { try InheritedSockets.check(tcp) }
        #expect(listen(tcp, 8) == 0)
        try InheritedSockets.check(tcp)
    }
}

import Testing
@testable import Hookgate

/// The client connection's life, driven event by event on a fake clock (as hummingbird's
/// `HTTPConnectionStateHandlerStateMachineTests` does).
@Suite struct ConnectionStateMachineTests {
    static let ms: UInt64 = 1_000_000
    static let limits = ConnectionStateMachine.Limits(parser: RequestParser.Limits(maxHeadBytes: 256, maxBodyBytes: 16),
                                                      requestDeadlineMs: 1000, lingerMs: 200)

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func delivered(_ action: ConnectionStateMachine.Action) -> ParsedRequest? {
        if case .deliver(let r) = action { return r }
        return nil
    }

    func rejected(_ action: ConnectionStateMachine.Action) -> RequestError? {
        if case .reject(let e) = action { return e }
        return nil
    }

    @Test func keepAliveServesRequestsOneAfterAnotherWithAFreshDeadlineEach() throws {
        var m = ConnectionStateMachine(limits: Self.limits, now: 0)
        #expect(m.deadline == 1000 * Self.ms)
        m.received(Self.bytes("POST /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\n\r\n"))
        let a = try #require(delivered(m.next(now: 10 * Self.ms)))
        #expect(a.head.target == "/a")
        #expect(m.phase == .handling && m.deadline == nil, "no request deadline while the handler works")
        guard case .wait = m.next(now: 11 * Self.ms) else { Issue.record("a second request while the first is handled"); return }
        m.answered(keepAlive: true, now: 500 * Self.ms)
        #expect(m.phase == .reading && m.deadline == 1500 * Self.ms, "the deadline restarts at the answer")
        let b = try #require(delivered(m.next(now: 500 * Self.ms)), "the pipelined request follows the answer")
        #expect(b.head.target == "/b")
    }

    @Test func anIdleConnectionClosesSilentlyAtTheDeadline() {
        var m = ConnectionStateMachine(limits: Self.limits, now: 0)
        guard case .wait = m.timerFired(now: 999 * Self.ms) else { Issue.record("fired early"); return }
        guard case .close = m.timerFired(now: 1000 * Self.ms) else { Issue.record("not closed"); return }
        #expect(m.phase == .closed)
    }

    @Test func aRequestNotWholeAtTheDeadlineIsRefusedWith408ThenClosedGracefully() throws {
        var m = ConnectionStateMachine(limits: Self.limits, now: 0)
        m.received(Self.bytes("POST /a HTTP/1.1\r\nAuthorization: Bearer k\r\nX-Slow: a"))
        guard case .wait = m.next(now: 5 * Self.ms) else { Issue.record("not waiting"); return }
        let e = try #require(rejected(m.timerFired(now: 1000 * Self.ms)))
        #expect(e.kind == .timedOut && e.status == 408)
        #expect(e.head.values("Authorization") == ["Bearer k"])
        #expect(!m.mayKeepAlive)
        m.answered(keepAlive: true, now: 1001 * Self.ms)
        #expect(m.phase == .closing, "an answer to a refused request closes the connection")
        guard case .shutdownWrite = m.drained(now: 1002 * Self.ms) else { Issue.record("no lingering close"); return }
        #expect(m.phase == .lingering && m.deadline == 1202 * Self.ms)
        guard case .close = m.timerFired(now: 1202 * Self.ms) else { Issue.record("lingering never ends"); return }
    }

    @Test func anOversizedBodyIsRefusedOnItsHeadAndInputIsDroppedWhileLingering() throws {
        var m = ConnectionStateMachine(limits: Self.limits, now: 0)
        m.received(Self.bytes("POST /a HTTP/1.1\r\nContent-Length: 17\r\n\r\n"))
        let e = try #require(rejected(m.next(now: 1)))
        #expect(e.kind == .bodyTooLarge)
        #expect(!m.wantsInput, "input waits while the refusal is recorded and answered")
        m.answered(keepAlive: false, now: 2)
        guard case .shutdownWrite = m.drained(now: 3) else { Issue.record("no shutdown"); return }
        #expect(!m.wantsInput)
        guard case .close = m.peerGone(now: 4) else { Issue.record("the peer's close ends lingering"); return }
    }

    @Test func connectionCloseAndHTTP10CloseAfterTheAnswer() throws {
        for text in ["GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "GET / HTTP/1.0\r\n\r\n"] {
            var m = ConnectionStateMachine(limits: Self.limits, now: 0)
            m.received(Self.bytes(text))
            _ = try #require(delivered(m.next(now: 0)))
            #expect(!m.mayKeepAlive)
            m.answered(keepAlive: true, now: 1)
            #expect(m.phase == .closing)
        }
    }

    @Test func expectContinueIsAnsweredBeforeTheBody() throws {
        var m = ConnectionStateMachine(limits: Self.limits, now: 0)
        m.received(Self.bytes("POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"))
        guard case .sendContinue = m.next(now: 0) else { Issue.record("no 100 Continue"); return }
        guard case .wait = m.next(now: 0) else { Issue.record("not waiting for the body"); return }
        m.received(Self.bytes("abc"))
        #expect(try #require(delivered(m.next(now: 1))).bodyLength == 3)
    }

    @Test func drainingClosesIdleKeepAliveConnectionsAndFinishesBusyOnes() throws {
        var idle = ConnectionStateMachine(limits: Self.limits, now: 0)
        idle.received(Self.bytes("POST /a HTTP/1.1\r\n\r\n"))
        _ = try #require(delivered(idle.next(now: 0)))
        idle.answered(keepAlive: true, now: 1)
        #expect(idle.phase == .reading && idle.answeredRequests == 1)
        guard case .close = idle.drain(now: 2, inputPending: false) else { Issue.record("idle keep-alive not closed"); return }

        var busy = ConnectionStateMachine(limits: Self.limits, now: 0)
        busy.received(Self.bytes("POST /a HTTP/1.1\r\n\r\n"))
        _ = try #require(delivered(busy.next(now: 0)))
        guard case .wait = busy.drain(now: 1, inputPending: false) else { Issue.record("busy closed"); return }
        #expect(!busy.mayKeepAlive)
        busy.answered(keepAlive: true, now: 2)
        #expect(busy.phase == .closing)

        var partial = ConnectionStateMachine(limits: Self.limits, now: 0)
        partial.received(Self.bytes("POST /a HT"))
        _ = partial.next(now: 0)
        guard case .wait = partial.drain(now: 1, inputPending: false) else { Issue.record("a request under way was cut"); return }
        partial.received(Self.bytes("TP/1.1\r\n\r\n"))
        _ = try #require(delivered(partial.next(now: 2)), "the request under way is still read and answered")
    }

    @Test func drainingAnswersTheFirstRequestOfAConnectionAcceptedBeforeIt() throws {
        // Accepted, nothing read yet: the caller's request is on its way to a listener that took
        // the connection, so it is read (within the request deadline) and answered, then closed.
        var fresh = ConnectionStateMachine(limits: Self.limits, now: 0)
        guard case .wait = fresh.drain(now: 1, inputPending: false) else { Issue.record("fresh connection closed"); return }
        guard case .wait = fresh.next(now: 2) else { Issue.record("closed while waiting for its first request"); return }
        fresh.received(Self.bytes("POST /a HTTP/1.1\r\n\r\n"))
        _ = try #require(delivered(fresh.next(now: 3)))
        #expect(!fresh.mayKeepAlive)
        fresh.answered(keepAlive: true, now: 4)
        #expect(fresh.phase == .closing)

        // One that never sends is closed at the request deadline, as without a drain.
        var silent = ConnectionStateMachine(limits: Self.limits, now: 0)
        _ = silent.drain(now: 1, inputPending: false)
        guard case .close = silent.timerFired(now: try #require(silent.deadline)) else { Issue.record("silent connection kept"); return }

        // A keep-alive connection whose next request is already in the socket is not cut: the
        // request is read and answered (the gateway answers it 503 draining), then it closes.
        var kept = ConnectionStateMachine(limits: Self.limits, now: 0)
        kept.received(Self.bytes("POST /a HTTP/1.1\r\n\r\n"))
        _ = try #require(delivered(kept.next(now: 0)))
        kept.answered(keepAlive: true, now: 1)
        guard case .wait = kept.drain(now: 2, inputPending: true) else { Issue.record("pending request cut"); return }
        guard case .wait = kept.next(now: 3) else { Issue.record("closed before the pending bytes were read"); return }
        kept.received(Self.bytes("POST /b HTTP/1.1\r\n\r\n"))
        _ = try #require(delivered(kept.next(now: 4)))
        kept.answered(keepAlive: true, now: 5)
        #expect(kept.phase == .closing && kept.answeredRequests == 2)
    }

    @Test func aPeerThatLeavesMidRequestIsClosedAndOneThatHalfClosesStillGetsItsAnswer() throws {
        var gone = ConnectionStateMachine(limits: Self.limits, now: 0)
        gone.received(Self.bytes("POST /a HTTP/1.1\r\nHost"))
        _ = gone.next(now: 0)
        guard case .close = gone.peerGone(now: 1) else { Issue.record("not closed"); return }

        var half = ConnectionStateMachine(limits: Self.limits, now: 0)
        half.received(Self.bytes("POST /a HTTP/1.1\r\n\r\n"))
        _ = try #require(delivered(half.next(now: 0)))
        guard case .wait = half.peerGone(now: 1) else { Issue.record("closed before the answer"); return }
        half.answered(keepAlive: true, now: 2)
        #expect(half.phase == .closing)
        guard case .close = half.drained(now: 3) else { Issue.record("not closed once written"); return }
    }

    @Test func aClientThatNeverReadsItsAnswerIsCutOffAfterTheLingerTime() {
        var m = ConnectionStateMachine(limits: Self.limits, now: 0)
        m.received(Self.bytes("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"))
        _ = m.next(now: 0)
        m.answered(keepAlive: false, now: 10 * Self.ms)
        #expect(m.deadline == 210 * Self.ms)
        guard case .close = m.timerFired(now: 210 * Self.ms) else { Issue.record("never cut off"); return }
    }
}

import Testing
@testable import Hookgate

/// The upstream connection and the pool's queue, driven event by event on a fake clock.
@Suite struct UpstreamConnectionStateMachineTests {
    typealias Machine = UpstreamConnectionStateMachine
    static let ms: UInt64 = 1_000_000
    static let timeouts = Machine.Timeouts(connectMs: 100, answerMs: 1000, idleMs: 5000)

    static func address(_ host: String) -> SocketAddress {
        try! SocketAddress.resolve(host: host, port: 443).get()[0]
    }

    static let a = address("127.0.0.1")
    static let b = address("127.0.0.2")

    static func call(_ id: String) -> UpstreamCall {
        UpstreamCall(path: "/hooks/h/requests/\(id)/redeliver", serviceToken: "t", requestID: id, hostHeader: "u")
    }

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
    static let ok = bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    func sent(_ action: Machine.Action) -> UpstreamCall? {
        if case .send(let call) = action { return call }
        return nil
    }

    func failure(_ action: Machine.Action) -> UpstreamFailure? {
        if case .fail(let f) = action { return f }
        return nil
    }

    func response(_ action: Machine.Action) -> (UpstreamResponse, Bool)? {
        if case .succeed(let r, let keepAlive) = action { return (r, keepAlive) }
        return nil
    }

    /// A connection that reached `busy` with `call` on the wire, at `now`.
    func busy(_ call: UpstreamCall, now: UInt64 = 0) -> Machine {
        var m = Machine(timeouts: Self.timeouts, maxResponseBytes: 64)
        _ = m.connect(to: [Self.a], carrying: call, now: now)
        _ = m.connected()
        _ = m.handshakeFinished(now: now)
        return m
    }

    @Test func aCallGoesOutOnceTheHandshakeIsDoneAndTheConnectionIsReusedAfterItsAnswer() throws {
        var m = Machine(timeouts: Self.timeouts, maxResponseBytes: 64)
        guard case .connect(let first) = m.connect(to: [Self.a, Self.b], carrying: Self.call("r1"), now: 0) else {
            Issue.record("no connect"); return
        }
        #expect(first == Self.a && m.state == .connecting && m.deadline == 100 * Self.ms)
        guard case .startTLS = m.connected() else { Issue.record("no TLS"); return }
        #expect(m.state == .handshaking && m.hasCall)
        let call = try #require(sent(m.handshakeFinished(now: 40 * Self.ms)))
        #expect(call.head == Self.call("r1").head)
        #expect(m.state == .busy && m.deadline == 1040 * Self.ms, "the answer deadline starts when the call goes out")
        guard case .wait = m.received(Self.ok.prefix(20), now: 50 * Self.ms) else { Issue.record("half an answer ended it"); return }
        let (answer, keepAlive) = try #require(response(m.received(Self.ok.dropFirst(20), now: 60 * Self.ms)))
        #expect(answer.status == 200 && answer.body == Self.bytes("{}") && keepAlive)
        #expect(m.state == .idle && !m.hasCall && m.deadline == 5060 * Self.ms)
        let second = try #require(sent(m.start(Self.call("r2"), now: 70 * Self.ms)))
        #expect(second.head == Self.call("r2").head && m.deadline == 1070 * Self.ms)
    }

    @Test func aRefusedConnectMovesToTheNextAddressUnderOneDeadlineThenFailsAsNotSent() throws {
        var m = Machine(timeouts: Self.timeouts, maxResponseBytes: 64)
        _ = m.connect(to: [Self.a, Self.b], carrying: Self.call("r1"), now: 0)
        guard case .connect(let next) = m.connectFailed("127.0.0.1:443: Connection refused") else {
            Issue.record("no fallback"); return
        }
        #expect(next == Self.b && m.deadline == 100 * Self.ms, "the fallback does not get a deadline of its own")
        let f = try #require(failure(m.connectFailed("127.0.0.2:443: Connection refused")))
        #expect(f == .connect("127.0.0.2:443: Connection refused"))
        #expect(!f.reachedUpstream && f.refusal.status == 502)
        #expect(m.state == .closed && m.deadline == nil)
        guard case .wait = m.connected() else { Issue.record("a closed connection connected"); return }
    }

    @Test func noAddressFailsAtOnce() throws {
        var m = Machine(timeouts: Self.timeouts, maxResponseBytes: 64)
        let f = try #require(failure(m.connect(to: [], carrying: Self.call("r1"), now: 0)))
        #expect(f == .unresolved("no address to connect to") && m.state == .closed)
    }

    @Test func aStalledHandshakeFailsAtTheConnectDeadlineAsNotSent() throws {
        var m = Machine(timeouts: Self.timeouts, maxResponseBytes: 64)
        _ = m.connect(to: [Self.a], carrying: Self.call("r1"), now: 0)
        _ = m.connected()
        guard case .wait = m.timerFired(now: 99 * Self.ms) else { Issue.record("fired early"); return }
        let f = try #require(failure(m.timerFired(now: 100 * Self.ms)))
        #expect(f == .connectTimeout(100) && !f.reachedUpstream && f.refusal.status == 502)
        guard case .wait = m.handshakeFinished(now: 101 * Self.ms) else {
            Issue.record("a late handshake sent the call after it failed"); return
        }
    }

    @Test func aFailedHandshakeFailsTheCallWithItsReason() throws {
        var m = Machine(timeouts: Self.timeouts, maxResponseBytes: 64)
        _ = m.connect(to: [Self.a, Self.b], carrying: Self.call("r1"), now: 0)
        _ = m.connected()
        let f = try #require(failure(m.handshakeFailed(.tls("certificate verify failed"))))
        #expect(f == .tls("certificate verify failed") && !f.reachedUpstream)
    }

    @Test func noAnswerInTimeIs504AndMayHaveReachedTheUpstream() throws {
        var m = busy(Self.call("r1"), now: 0)
        _ = m.received(Self.bytes("HTTP/1.1 200 OK\r\n"), now: 10 * Self.ms)
        guard case .wait = m.timerFired(now: 999 * Self.ms) else { Issue.record("fired early"); return }
        let f = try #require(failure(m.timerFired(now: 1000 * Self.ms)))
        #expect(f == .timeout(1000) && f.reachedUpstream && f.refusal.status == 504)
        guard case .wait = m.received(Self.ok, now: 1001 * Self.ms) else { Issue.record("a late answer counted"); return }
    }

    @Test func theUpstreamClosingMidAnswerFailsTheCall() throws {
        var m = busy(Self.call("r1"))
        _ = m.received(Self.ok.prefix(30), now: 1)
        let f = try #require(failure(m.peerClosed(now: 2)))
        #expect(f.description == "upstream closed the connection: invalid HTTP response from upstream: connection closed before the response was complete")
        #expect(f.reachedUpstream && f.refusal.status == 502)
    }

    @Test func aCloseDelimitedAnswerEndsAtTheCloseAndTheConnectionWithIt() throws {
        var m = busy(Self.call("r1"))
        guard case .wait = m.received(Self.bytes("HTTP/1.1 200 OK\r\n\r\n{\"a\":"), now: 1) else { Issue.record("ended early"); return }
        _ = m.received(Self.bytes("1}"), now: 2)
        let (answer, keepAlive) = try #require(response(m.peerClosed(now: 3)))
        #expect(answer.body == Self.bytes("{\"a\":1}") && !keepAlive && m.state == .closed)
    }

    @Test func connectionCloseFromTheUpstreamIsNotReused() throws {
        var m = busy(Self.call("r1"))
        let (_, keepAlive) = try #require(response(m.received(Self.bytes("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"), now: 1)))
        #expect(!keepAlive && m.state == .closed && m.deadline == nil)
    }

    @Test func aMalformedOrOversizedAnswerFailsAsInvalid() throws {
        var bad = busy(Self.call("r1"))
        let f = try #require(failure(bad.received(Self.bytes("HTTP/1.1 abc\r\n\r\n"), now: 1)))
        guard case .invalid = f else { Issue.record("not invalid: \(f)"); return }
        #expect(f.reachedUpstream && f.refusal.status == 502)
        var big = busy(Self.call("r2"))
        let g = try #require(failure(big.received(Self.bytes("HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n"), now: 1)))
        guard case .invalid = g else { Issue.record("not invalid: \(g)"); return }
    }

    @Test func anIdleConnectionClosesQuietlyOnItsDeadlineOnStrayBytesOrOnClose() throws {
        for event in 0..<4 {
            var m = busy(Self.call("r1"))
            _ = m.received(Self.ok, now: 0)
            #expect(m.state == .idle)
            let action: Machine.Action
            switch event {
            case 0:
                guard case .wait = m.timerFired(now: 4999 * Self.ms) else { Issue.record("fired early"); return }
                action = m.timerFired(now: 5000 * Self.ms)
            case 1: action = m.received(Self.bytes("HTTP/1.1 200 OK\r\n"), now: 1)
            case 2: action = m.peerClosed(now: 1)
            default: action = m.close()
            }
            guard case .close = action else { Issue.record("event \(event): \(action)"); return }
            #expect(m.state == .closed)
        }
    }

    @Test func closingAConnectionWithACallFailsTheCallOnce() throws {
        var m = busy(Self.call("r1"))
        let f = try #require(failure(m.close()))
        #expect(f.reachedUpstream)
        guard case .wait = m.close() else { Issue.record("closed twice"); return }
        guard case .wait = m.peerClosed(now: 1) else { Issue.record("ended twice"); return }
    }

    /// At most once, over thousands of random event orders: each call is sent at most once,
    /// ends exactly once, never goes out after it ended, and a failure says whether it may
    /// have reached the upstream exactly when it was sent.
    @Test func randomEventOrdersNeverSendACallTwiceAndEndEachCallOnce() throws {
        var rng = SplitMix(seed: 0x5eed)
        for _ in 0..<5000 {
            var m = Machine(timeouts: Self.timeouts, maxResponseBytes: 64)
            var now: UInt64 = 0
            var calls = 0
            var sentNow = false, ended = false
            var sends = 0, ends = 0
            func track(_ action: Machine.Action) {
                switch action {
                case .send:
                    #expect(!sentNow && !ended, "a call sent twice or after it ended")
                    sentNow = true
                    sends += 1
                case .succeed:
                    #expect(sentNow && !ended)
                    ended = true
                    ends += 1
                case .fail(let f):
                    #expect(!ended, "a call ended twice")
                    #expect(f.reachedUpstream == sentNow, "\(f) after sent=\(sentNow)")
                    ended = true
                    ends += 1
                case .connect:
                    #expect(!sentNow, "a reconnect after the call went out")
                case .wait, .startTLS, .close:
                    break
                }
            }
            calls = 1
            track(m.connect(to: [Self.a, Self.b], carrying: Self.call("r0"), now: now))
            for _ in 0..<12 {
                now += UInt64(rng.next(below: 400)) * Self.ms
                let action: Machine.Action
                switch rng.next(below: 11) {
                case 0: action = m.connectFailed("refused")
                case 1: action = m.connected()
                case 2: action = m.handshakeFinished(now: now)
                case 3: action = m.handshakeFailed(.tls("bad"))
                case 4: action = m.received(Self.ok.prefix(rng.next(below: Self.ok.count + 1)), now: now)
                case 5: action = m.received(Self.ok, now: now)
                case 6: action = m.peerClosed(now: now)
                case 7: action = m.readFailed("reset")
                case 8: action = m.writeFailed("broken pipe")
                case 9: action = m.timerFired(now: now)
                default:
                    if m.state == .idle {
                        // The pool hands the idle connection its next call.
                        #expect(ended)
                        calls += 1
                        sentNow = false
                        ended = false
                        action = m.start(Self.call("r\(calls)"), now: now)
                    } else {
                        action = m.close()
                    }
                }
                track(action)
                #expect(m.hasCall == (!ended && m.state != .closed))
            }
            if !ended { track(m.close()) }
            #expect(ends == calls, "every call ends exactly once")
            #expect(sends <= calls)
        }
    }
}

@Suite struct UpstreamPoolStateMachineTests {
    final class Connection {}
    typealias Machine = UpstreamPoolStateMachine<Connection, Int>
    static let ms: UInt64 = 1_000_000
    static let limits = Machine.Limits(maxConnections: 2, maxQueued: 2, queueTimeoutMs: 100)

    func carried(_ h: Machine.Handoff) -> Int? {
        if case .carry(let w) = h { return w }
        return nil
    }

    @Test func callsOpenConnectionsUpToTheCapThenWaitInOrder() throws {
        var m = Machine(limits: Self.limits)
        guard case .open = m.submit(1, now: 0), case .open = m.submit(2, now: 0) else { Issue.record("not opened"); return }
        #expect(m.open == 2)
        guard case .queued = m.submit(3, now: 10 * Self.ms), case .queued = m.submit(4, now: 20 * Self.ms) else {
            Issue.record("not queued"); return
        }
        #expect(m.open == 2 && m.queuedCount == 2 && m.deadline == 110 * Self.ms)
        let c1 = Connection()
        #expect(carried(m.released(c1)) == 3, "the oldest waiting call takes the freed connection")
        #expect(m.deadline == 120 * Self.ms, "the deadline moves to the next waiting call")
        let c2 = Connection()
        #expect(m.closed(c2) == 4, "a closed connection's place goes to a waiting call")
        #expect(m.open == 2 && m.queuedCount == 0 && m.deadline == nil)
        guard case .idle = m.released(c1) else { Issue.record("not idle"); return }
        guard case .reuse(let again) = m.submit(5, now: 30 * Self.ms) else { Issue.record("idle not reused"); return }
        #expect(again === c1)
    }

    @Test func aFullQueueRefusesAtOnceAndSaysWhy() throws {
        var m = Machine(limits: Self.limits)
        for w in 1...4 { _ = m.submit(w, now: 0) }
        guard case .refused(let f) = m.submit(5, now: 0) else { Issue.record("not refused"); return }
        #expect(f == .queueFull(2) && !f.reachedUpstream)
        #expect(f.description == "every upstream connection is busy and 2 calls already wait for one (upstream.max_queue)")
    }

    @Test func waitingCallsTimeOutOldestFirstAndAreNeverHandedOutAfter() throws {
        var m = Machine(limits: Self.limits)
        _ = m.submit(1, now: 0)
        _ = m.submit(2, now: 0)
        _ = m.submit(3, now: 0)
        _ = m.submit(4, now: 50 * Self.ms)
        #expect(m.timerFired(now: 99 * Self.ms).isEmpty, "nothing is due yet")
        #expect(m.timerFired(now: 100 * Self.ms) == [3])
        #expect(m.deadline == 150 * Self.ms)
        #expect(m.timerFired(now: 200 * Self.ms) == [4])
        #expect(m.deadline == nil && m.queuedCount == 0)
        guard case .idle = m.released(Connection()) else { Issue.record("a timed-out call was handed a connection"); return }
    }

    @Test func aClosedIdleConnectionIsNotReusedAndAFailedOpenFreesItsPlace() throws {
        var m = Machine(limits: Self.limits)
        _ = m.submit(1, now: 0)
        _ = m.submit(2, now: 0)
        let c1 = Connection()
        _ = m.released(c1)
        #expect(m.closed(c1) == nil && m.idleCount == 0 && m.open == 1)
        _ = m.submit(3, now: 0)
        guard case .queued = m.submit(4, now: 0) else { Issue.record("over the cap"); return }
        #expect(m.openFailed() == 4, "the place of a connection that could not be made goes to a waiting call")
        #expect(m.open == 2)
    }

    @Test func shutdownTakesTheIdleConnectionsOnly() {
        var m = Machine(limits: Self.limits)
        _ = m.submit(1, now: 0)
        _ = m.submit(2, now: 0)
        let c1 = Connection()
        _ = m.released(c1)
        let idle = m.takeIdle()
        #expect(idle.count == 1 && idle[0] === c1 && m.idleCount == 0)
        #expect(m.closed(c1) == nil && m.open == 1)
    }

    /// The cap and exactly-once hand-out, over random orders of calls, answers, closes and time.
    @Test func randomOrdersKeepTheCapAndHandEachCallOutOnce() {
        var rng = SplitMix(seed: 42)
        for _ in 0..<2000 {
            var m = Machine(limits: Self.limits)
            var now: UInt64 = 0
            var nextWaiter = 0
            var handedOut = Set<Int>()
            var busy: [(Connection, Int)] = []
            var idle: [Connection] = []
            func handOut(_ w: Int) {
                #expect(!handedOut.contains(w), "call \(w) handed out twice")
                handedOut.insert(w)
            }
            for _ in 0..<40 {
                now += UInt64(rng.next(below: 60)) * Self.ms
                switch rng.next(below: 6) {
                case 0, 1:
                    nextWaiter += 1
                    switch m.submit(nextWaiter, now: now) {
                    case .reuse(let c):
                        #expect(idle.contains { $0 === c })
                        idle.removeAll { $0 === c }
                        handOut(nextWaiter)
                        busy.append((c, nextWaiter))
                    case .open:
                        handOut(nextWaiter)
                        busy.append((Connection(), nextWaiter))
                    case .queued:
                        break
                    case .refused:
                        handOut(nextWaiter)
                    }
                case 2:
                    guard !busy.isEmpty else { continue }
                    let (c, _) = busy.remove(at: rng.next(below: busy.count))
                    switch m.released(c) {
                    case .carry(let w):
                        handOut(w)
                        busy.append((c, w))
                    case .idle:
                        idle.append(c)
                    }
                case 3:
                    guard !busy.isEmpty else { continue }
                    let (c, _) = busy.remove(at: rng.next(below: busy.count))
                    if let w = m.closed(c) {
                        handOut(w)
                        busy.append((Connection(), w))
                    }
                case 4:
                    guard !idle.isEmpty else { continue }
                    let c = idle.remove(at: rng.next(below: idle.count))
                    if let w = m.closed(c) {
                        handOut(w)
                        busy.append((Connection(), w))
                    }
                default:
                    for w in m.timerFired(now: now) { handOut(w) }
                }
                #expect(m.open == busy.count + idle.count, "the machine counts every open connection")
                #expect(m.open <= Self.limits.maxConnections, "over the cap")
                #expect(m.queuedCount <= Self.limits.maxQueued)
                #expect(m.idleCount == idle.count)
            }
            for w in m.timerFired(now: now + 1_000 * Self.ms) { handOut(w) }
            #expect(handedOut.count == nextWaiter, "every call was handed out exactly once")
        }
    }
}

/// A small seeded generator, so that a failing random order can be replayed.
struct SplitMix {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next(below n: Int) -> Int { Int(next() % UInt64(n)) }
}

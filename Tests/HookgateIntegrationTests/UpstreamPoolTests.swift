import Foundation
import Logging
import Testing
@testable import Hookgate

/// The upstream pool driven in-process on its own event loop, against the real simulator over
/// verified TLS: address fallback, the connection cap, a full queue.
@Suite struct UpstreamPoolTests {
    static func address(_ port: Int) throws -> SocketAddress {
        try #require(try? SocketAddress.resolve(host: "127.0.0.1", port: port).get().first)
    }

    /// Runs `body` on a fresh loop's thread and the loop until `done` is called or 10 s pass.
    static func onLoop(_ body: @escaping @Sendable (EventLoop, @escaping @Sendable () -> Void) -> Void) throws {
        let loop = EventLoop()
        let finished = DispatchSemaphore(value: 0)
        loop.execute {
            // A pending timer keeps the loop running while the test waits on other threads.
            let keepAlive = LoopBound(loop.timer(after: 60_000) {}, on: loop)
            body(loop) {
                keepAlive.value.cancel()
                loop.stop()
                finished.signal()
            }
        }
        let thread = Thread { loop.run() }
        thread.start()
        if finished.wait(timeout: .now() + 10) == .timedOut {
            loop.stop()
            throw HarnessError("the loop did not finish in time")
        }
        Thread.sleep(forTimeInterval: 0.05)
    }

    @Test func aRefusedAddressFallsBackWithinOneConnectionSlot() throws {
        let dir = Harness.tempDir("pool")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let refused = try Self.address(RawHTTP.closedPort()), good = try Self.address(sim.port)
        let results = LockedBox<[Int]>([])
        let peak = LockedBox<(open: Int, opened: Int)>((0, 0))
        let caFile = sim.caFile, port = sim.port
        try Self.onLoop { loop, done in
            let pool = UpstreamPool(loop: loop, tls: try! TLSClientContext(caFile: caFile),
                                    options: UpstreamOptions(host: "localhost", port: port, maxConnections: 1))
            // The refused address comes first: the connection moves on to the good one.
            pool.setAddresses([refused, good], error: nil)
            var left = 3
            for i in 0..<3 {
                let call = UpstreamCall(path: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/29dd8606-4e01-46cb-aca2-dd6022e7486\(i)/redeliver",
                                        serviceToken: Harness.serviceToken, requestID: RequestID.make(),
                                        options: pool.options)
                pool.send(call) { result in
                    results.set(results.get() + [(try? result.get().status) ?? -1])
                    peak.set((max(peak.get().open, pool.openConnections), pool.connectionsOpened))
                    left -= 1
                    if left == 0 { pool.closeIdle(); done() }
                }
                peak.set((max(peak.get().open, pool.openConnections), pool.connectionsOpened))
            }
        }
        #expect(results.get() == [200, 200, 200])
        #expect(peak.get().open == 1, "the cap of one connection held")
        #expect(peak.get().opened == 1, "one connection, its slot kept while it tried the next address")
        #expect(sim.requests.count == 3)
    }

    @Test func aFullQueueSaysSoAtOnce() throws {
        let dir = Harness.tempDir("pool-full")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let good = try Self.address(sim.port)
        let failures = LockedBox<[String]>([])
        let caFile = sim.caFile, port = sim.port
        try Self.onLoop { loop, done in
            let pool = UpstreamPool(loop: loop, tls: try! TLSClientContext(caFile: caFile),
                                    options: UpstreamOptions(host: "localhost", port: port, maxConnections: 1,
                                                             queueTimeoutMs: 5000, maxQueued: 1))
            pool.setAddresses([good], error: nil)
            var left = 3
            for _ in 0..<3 {
                let call = UpstreamCall(path: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/29dd8606-4e01-46cb-aca2-dd6022e74865/redeliver",
                                        serviceToken: Harness.serviceToken, requestID: RequestID.make(), options: pool.options)
                pool.send(call) { result in
                    if case .failure(let f) = result { failures.set(failures.get() + [f.description]) }
                    left -= 1
                    if left == 0 { pool.closeIdle(); done() }
                }
            }
        }
        // One call on the connection, one queued, the third refused at once, naming the bound.
        #expect(failures.get() == ["every upstream connection is busy and 1 calls already wait for one (upstream.max_queue)"])
    }

    @Test func aResolverThreadEndsWhenStopped() throws {
        let resolver = LockedBox<Resolver?>(nil)
        let addresses = LockedBox<Int>(0)
        try Self.onLoop { loop, done in
            let pool = UpstreamPool(loop: loop, tls: try! TLSClientContext(caFile: nil),
                                    options: UpstreamOptions(host: "localhost", port: 443))
            let r = Resolver(loop: loop, host: "localhost", port: 443, pool: LoopBound(pool, on: loop),
                             logger: Logger(label: "test"), interval: 30)
            resolver.set(r)
            let bound = LoopBound(pool, on: loop)
            Thread.detachNewThread {
                r.start(waitFirstMs: 2000)
                loop.execute {
                    addresses.set(bound.value.addresses.count)
                    r.stop()
                    done()
                }
            }
        }
        let r = try #require(resolver.get())
        let deadline = Date().addingTimeInterval(3)
        while !r.isFinished && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(r.isFinished, "the resolver thread outlived stop()")
        #expect(addresses.get() >= 1, "localhost resolved and reached the pool")
    }
}

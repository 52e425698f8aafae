import CHiredis
import Foundation
import Logging

// Threads: the loop thread only (hiredis's asynchronous context is driven by the loop's
// libevent base); a host name is resolved on a short-lived thread and handed back to the loop.

/// One Redis reply, copied out of hiredis's (which frees its own after the callback).
enum RedisReply: Equatable, Sendable {
    case status(String)
    case error(String)
    case integer(Int64)
    case string([UInt8])
    case array([RedisReply])
    case null

    init(_ reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        func text() -> String {
            guard let str = r.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: str, count: r.len), as: UTF8.self)
        }
        switch r.type {
        case REDIS_REPLY_STATUS: self = .status(text())
        case REDIS_REPLY_ERROR: self = .error(text())
        case REDIS_REPLY_INTEGER: self = .integer(r.integer)
        case REDIS_REPLY_STRING:
            self = .string(r.str.map { Array(UnsafeRawBufferPointer(start: $0, count: r.len)) } ?? [])
        case REDIS_REPLY_ARRAY:
            var items: [RedisReply] = []
            items.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                if let element = r.element?[i] { items.append(RedisReply(element)) } else { items.append(.null) }
            }
            self = .array(items)
        default: self = .null
        }
    }
}

/// An asynchronous connection to Redis on the loop: hiredis's async context attached to the
/// loop's event base with hiredis's own libevent adapter, commands pipelined on it, replies in
/// order. Connects (and reconnects after any failure, with jittered exponential backoff from
/// 100 ms to 5 s) by itself; `AUTH` and the `onConnect` commands go first on every new
/// connection. While not connected, `send` refuses at once rather than queueing.
///
/// Ownership: owns its `redisAsyncContext` (hiredis frees it after the disconnect callback,
/// or in `redisAsyncFree` from `stop()`); hiredis's callbacks get an unretained pointer to the
/// client (valid: the context dies first) and each command a retained `Pending` box, released by
/// its callback, which hiredis calls exactly once (with no reply when the connection goes).
final class RedisClient {
    enum Failure: Error, Equatable, CustomStringConvertible {
        case notConnected(String)
        case connectionLost(String)
        case tooManyPending(Int)

        var description: String {
            switch self {
            case .notConnected(let why): "not connected to Redis (\(why))"
            case .connectionLost(let why): "the connection to Redis was lost (\(why))"
            case .tooManyPending(let n): "\(n) commands already wait for Redis"
            }
        }
    }

    typealias Completion = (Result<RedisReply, Failure>) -> Void

    private let loop: EventLoop
    private let address: RedisAddress
    private let password: String?
    private let connectTimeoutMs: Int
    private let maxPending: Int
    private let logger: Logger
    /// Sent first on every new connection (after AUTH), e.g. `SCRIPT LOAD`.
    var onConnect: [[String]] = []
    /// Told when the connection becomes usable (true) or is lost (false), with why.
    var onStateChange: ((Bool, String) -> Void)?

    private var context: UnsafeMutablePointer<redisAsyncContext>?
    private(set) var connected = false
    private(set) var lastError = "not connected yet"
    private(set) var pending = 0
    private var attempts = 0
    private var retryTimer: LoopTimer?
    private var connectTimer: LoopTimer?
    private var stopped = false

    init(loop: EventLoop, address: RedisAddress, password: String?, connectTimeoutMs: Int, maxPending: Int, logger: Logger) {
        self.loop = loop
        self.address = address
        self.password = password
        self.connectTimeoutMs = connectTimeoutMs
        self.maxPending = maxPending
        self.logger = logger
    }

    deinit { stop() }

    func start() { connect() }

    /// Closes the connection; pending commands complete with `.connectionLost`.
    func stop() {
        stopped = true
        retryTimer = nil
        connectTimer = nil
        if let context {
            self.context = nil
            // No callback may reach this client any more (stop may run in deinit): pending
            // commands still complete, as lost, through their boxes.
            context.pointee.data = nil
            redisAsyncFree(context)
        }
        connected = false
    }

    /// Sends one command (pipelined behind those already sent). `done` runs once, on the loop.
    func send(_ arguments: [String], done: @escaping Completion) {
        guard connected, let context else { return done(.failure(.notConnected(lastError))) }
        guard pending < maxPending else { return done(.failure(.tooManyPending(pending))) }
        let box = Unmanaged.passRetained(Pending(client: self, done: done)).toOpaque()
        pending += 1
        let rc = Self.withArgv(arguments) { argc, argv, lengths in
            redisAsyncCommandArgv(context, { _, reply, privdata in
                guard let privdata else { return }
                let pending = Unmanaged<Pending>.fromOpaque(privdata).takeRetainedValue()
                pending.complete(reply.map { RedisReply($0.assumingMemoryBound(to: redisReply.self)) })
            }, box, argc, argv, lengths)
        }
        if rc != REDIS_OK {
            // Not queued (the context is going away): hiredis will not call back.
            Unmanaged<Pending>.fromOpaque(box).release()
            pending -= 1
            done(.failure(.connectionLost(Self.error(of: context))))
        } else if !inCallback && !flushDue {
            // Written at the end of this turn of the loop rather than on the next (hiredis waits
            // for the socket's write event): a call waits for this reply. The commands of every
            // call decided in this turn go in one send() (bench/README.md, "Shared limits").
            flushDue = true
            flush.fireInThisTurn()
        }
    }

    /// The commands queued in this turn of the loop are written once, when it has run its callbacks.
    /// The timer (its libevent event) is the client's, freed with it; after `stop()` a fire finds
    /// no context and writes nothing.
    private var flushDue = false
    private lazy var flush = loop.timer(repeating: { [unowned self] in
        flushDue = false
        if let context, connected { redisAsyncHandleWrite(context) }
    })

    /// Inside one of hiredis's callbacks, where hiredis does the writing itself.
    private var inCallback = false

    /// A command on its way; hiredis holds it (retained) until its callback.
    private final class Pending {
        /// Weak: `stop()` in the client's deinit completes the last ones.
        weak var client: RedisClient?
        let done: Completion
        init(client: RedisClient, done: @escaping Completion) {
            self.client = client
            self.done = done
        }

        func complete(_ reply: RedisReply?) {
            client?.pending -= 1
            let outer = client?.inCallback ?? false
            client?.inCallback = true
            defer { client?.inCallback = outer }
            if let reply { done(.success(reply)) } else { done(.failure(.connectionLost(client?.lastError ?? "stopped"))) }
        }
    }

    private static func withArgv<R>(_ arguments: [String], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        let copies = arguments.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        var argv = copies.map { UnsafePointer<CChar>($0) }
        let lengths = arguments.map { $0.utf8.count }
        return argv.withUnsafeMutableBufferPointer { a in
            lengths.withUnsafeBufferPointer { l in body(Int32(arguments.count), a.baseAddress!, l.baseAddress!) }
        }
    }

    private static func error(of context: UnsafeMutablePointer<redisAsyncContext>) -> String {
        context.pointee.errstr.map { String(cString: $0) } ?? "error \(context.pointee.err)"
    }

    // MARK: - Connecting

    private func connect() {
        guard !stopped, context == nil else { return }
        switch address {
        case .unix(let path):
            open(redisAsyncConnectUnix(path))
        case .tcp(let host, let port):
            if HTTPSURL.isIPv4(host) || HTTPSURL.isIPv6(host) {
                open(redisAsyncConnect(host, Int32(port)))
                return
            }
            // getaddrinfo blocks: resolve off the loop, connect on it.
            let bound = LoopBound(self, on: loop)
            Thread.detachNewThread { [loop] in
                let resolved = SocketAddress.resolve(host: host, port: port)
                loop.execute {
                    let client = bound.value
                    switch resolved {
                    case .success(let addresses):
                        client.open(redisAsyncConnect(addresses.first?.host ?? host, Int32(port)))
                    case .failure(let error):
                        client.failed("cannot resolve \(host): \(error.message)")
                    }
                }
            }
        }
    }

    private func open(_ created: UnsafeMutablePointer<redisAsyncContext>?) {
        guard !stopped else {
            if let created { redisAsyncFree(created) }
            return
        }
        guard let created else { return failed("cannot allocate a Redis context") }
        if created.pointee.err != 0 {
            let why = Self.error(of: created)
            redisAsyncFree(created)
            return failed(why)
        }
        created.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        guard hookgate_redis_attach(created, UnsafeMutableRawPointer(loop.base)) == REDIS_OK else {
            redisAsyncFree(created)
            return failed("cannot attach the Redis connection to the event loop")
        }
        context = created
        redisAsyncSetConnectCallback(created) { context, status in
            guard let context, let client = RedisClient.of(context) else { return }
            client.connectFinished(ok: status == REDIS_OK, why: RedisClient.error(of: UnsafeMutablePointer(mutating: context)))
        }
        redisAsyncSetDisconnectCallback(created) { context, status in
            guard let context, let client = RedisClient.of(context) else { return }
            client.disconnected(why: status == REDIS_OK ? "closed" : RedisClient.error(of: UnsafeMutablePointer(mutating: context)))
        }
        connectTimer = loop.timer(after: connectTimeoutMs) { [unowned self] in
            self.connectTimer = nil
            guard !self.connected, let context = self.context else { return }
            // Frees the context; its disconnect callback is not called (never connected).
            self.context = nil
            redisAsyncFree(context)
            self.failed("no connection within \(self.connectTimeoutMs) ms")
        }
    }

    private static func of(_ context: UnsafePointer<redisAsyncContext>) -> RedisClient? {
        context.pointee.data.map { Unmanaged<RedisClient>.fromOpaque($0).takeUnretainedValue() }
    }

    private func connectFinished(ok: Bool, why: String) {
        connectTimer = nil
        guard ok else {
            // hiredis frees the context after this callback.
            context = nil
            return failed(why)
        }
        connected = true
        attempts = 0
        if let password { send(["AUTH", password]) { [unowned self] in self.checkSetup($0, what: "AUTH") } }
        for command in onConnect { send(command) { [unowned self] in self.checkSetup($0, what: command.first ?? "") } }
        onStateChange?(true, "connected")
    }

    private func checkSetup(_ result: Result<RedisReply, Failure>, what: String) {
        if case .success(.error(let message)) = result {
            // The reply text is Redis's, never the password.
            logger.error("Redis refused \(what) on a new connection", metadata: ["error": "\(message)"])
            lastError = "Redis refused \(what): \(message)"
        }
    }

    private func disconnected(why: String) {
        // hiredis frees the context after this callback (or is freeing it in `stop()`).
        context = nil
        let was = connected
        connected = false
        guard !stopped else { return }
        failed(why)
        if was { logger.debug("Redis connection closed", metadata: ["why": "\(why)"]) }
    }

    private func failed(_ why: String) {
        lastError = why
        connected = false
        onStateChange?(false, why)
        guard !stopped else { return }
        attempts += 1
        let base = min(5000, 100 << min(attempts - 1, 6))
        let delay = base / 2 + Int.random(in: 0...(base / 2))
        retryTimer = loop.timer(after: delay) { [unowned self] in
            self.retryTimer = nil
            self.connect()
        }
    }
}

// Threads: any (`SocketAddress` is a value; `resolve` blocks, so off the loop); `ScratchBuffer`: its owner's.

import Foundation

/// A resolved socket address (IPv4 or IPv6), stored as bytes so it is Sendable.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    /// A `sockaddr_storage` (aligned for any address family) and the length in use.
    private let storage: sockaddr_storage
    private let length: Int

    init(_ pointer: UnsafePointer<sockaddr>, length: Int) {
        var storage = sockaddr_storage()
        let length = min(length, MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: length))
        }
        self.storage = storage
        self.length = length
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, Int32) -> R) -> R {
        withUnsafePointer(to: storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, Int32(length)) }
        }
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.length == b.length && withUnsafeBytes(of: a.storage) { x in
            withUnsafeBytes(of: b.storage) { y in x.prefix(a.length).elementsEqual(y.prefix(b.length)) }
        }
    }

    public var description: String {
        withSockAddr { sa, len in
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            var serv = [CChar](repeating: 0, count: Int(NI_MAXSERV))
            guard getnameinfo(sa, socklen_t(len), &host, socklen_t(host.count), &serv, socklen_t(serv.count),
                              NI_NUMERICHOST | NI_NUMERICSERV) == 0 else { return "?" }
            let h = String(decoding: host.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)
            let s = String(decoding: serv.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)
            return h.contains(":") ? "[\(h)]:\(s)" : "\(h):\(s)"
        }
    }

    /// The IP address alone (no port); an IPv4-mapped IPv6 address as plain IPv4.
    var host: String {
        withSockAddr { sa, len -> String in
            var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            switch Int32(sa.pointee.sa_family) {
            case AF_INET:
                sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                    var a = p.pointee.sin_addr
                    _ = inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
                }
            case AF_INET6:
                sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var a = p.pointee.sin6_addr
                    _ = inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
                }
            default:
                return ""
            }
            let text = String(decoding: buf.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)
            if text.hasPrefix("::ffff:"), text.contains(".") { return String(text.dropFirst(7)) }
            return text
        }
    }

    /// The address a bound socket listens on, as text: `host:port`, or a Unix socket's path.
    static func local(of fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return "?" }
        if storage.ss_family == sa_family_t(AF_UNIX) {
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { un in
                    withUnsafeBytes(of: un.pointee.sun_path) { raw in
                        "unix:" + String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                    }
                }
            }
        }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0, length: Int(length)).description }
        }
    }

    /// The port a bound socket listens on.
    static func localPort(of fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return 0 }
        return withUnsafePointer(to: &storage) { p -> Int in
            if p.pointee.ss_family == sa_family_t(AF_INET6) {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }

    /// Blocking getaddrinfo: call it off the loop (start-up, or the resolver thread).
    /// `passive`: addresses to listen on.
    static func resolve(host: String, port: Int, passive: Bool = false) -> Result<[SocketAddress], ResolveError> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        if passive { hints.ai_flags = AI_PASSIVE }
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            return .failure(ResolveError(message: "cannot resolve \(host): \(String(cString: gai_strerror(rc)))"))
        }
        defer { freeaddrinfo(first) }
        var out: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            if let sa = ai.pointee.ai_addr { out.append(SocketAddress(sa, length: Int(ai.pointee.ai_addrlen))) }
            cursor = ai.pointee.ai_next
        }
        return out.isEmpty ? .failure(ResolveError(message: "no address for \(host)")) : .success(out)
    }
}

struct ResolveError: Error, Sendable { let message: String }

/// A fixed block of bytes, reused (loop thread only). Owns its allocation, freed in deinit.
final class ScratchBuffer {
    let base: UnsafeMutablePointer<UInt8>
    let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(capacity: count)
    }

    deinit { base.deallocate() }
}

import Foundation

// Threads: the main thread, at start (reads and clears the process environment).

/// Listening sockets passed by a service manager: systemd's socket activation protocol
/// (`sd_listen_fds(3)`), which `systemd-socket-activate` speaks too. The sockets are the
/// descriptors 3 … 3+`LISTEN_FDS`−1, meant for this process when `LISTEN_PID` is its pid;
/// `LISTEN_FDNAMES` names them (colon-separated), from each socket unit's
/// `FileDescriptorName=`.
///
/// Which is which: when any name is `main` or `admin`, by name (then every socket must be
/// named one of the two); otherwise by position, the main listener first and the admin
/// listener second. A listener not passed binds as configured.
///
/// Ownership: the descriptors become the gateway's (close-on-exec set here); each is handed to
/// one `HTTPListener`, which closes it when freed. The service manager keeps its own copy, so
/// connections wait in the socket's backlog while the gateway restarts.
struct InheritedSockets: Equatable {
    var main: Int32?
    var admin: Int32?

    static let none = InheritedSockets()

    struct Problem: Error, CustomStringConvertible, Equatable {
        var description: String
    }

    /// What the environment says, without touching any descriptor. `nil`: no sockets for this
    /// process (no `LISTEN_FDS`, or a `LISTEN_PID` naming another process).
    static func parse(_ environment: [String: String], pid: Int32) throws(Problem) -> (InheritedSockets, names: [String])? {
        guard let countText = environment["LISTEN_FDS"] else { return nil }
        guard let pidText = environment["LISTEN_PID"], let listenPID = Int32(pidText) else {
            throw Problem(description: "LISTEN_FDS is set but LISTEN_PID is missing or not a number")
        }
        guard listenPID == pid else { return nil }
        guard let count = Int(countText), (1...2).contains(count) else {
            throw Problem(description: "LISTEN_FDS=\(countText): expected 1 (main listener) or 2 (main, then admin)")
        }
        let fds = (0..<count).map { Int32(3 + $0) }
        let names = environment["LISTEN_FDNAMES"].map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        var sockets = InheritedSockets()
        if names.contains("main") || names.contains("admin") {
            for (i, fd) in fds.enumerated() {
                let name = i < names.count ? names[i] : ""
                switch name {
                case "main" where sockets.main == nil: sockets.main = fd
                case "admin" where sockets.admin == nil: sockets.admin = fd
                default:
                    throw Problem(description: "inherited socket \(fd) is named \"\(name)\": with names, each socket must be \"main\" or \"admin\", once (FileDescriptorName=)")
                }
            }
        } else {
            sockets.main = fds[0]
            sockets.admin = count > 1 ? fds[1] : nil
        }
        return (sockets, names)
    }

    /// The sockets passed to this process, checked (listening stream sockets) and marked
    /// close-on-exec; the variables are removed from the environment, as `sd_listen_fds(1)`
    /// does, so that nothing this process starts believes they are its own.
    static func take(logger: (String) -> Void) throws(Problem) -> InheritedSockets {
        let environment = ProcessInfo.processInfo.environment
        defer { for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] { unsetenv(name) } }
        guard let (sockets, _) = try parse(environment, pid: getpid()) else {
            if environment["LISTEN_FDS"] != nil {
                logger("LISTEN_FDS ignored: LISTEN_PID \(environment["LISTEN_PID"] ?? "") is not this process (\(getpid()))")
            }
            return .none
        }
        for fd in [sockets.main, sockets.admin].compactMap({ $0 }) {
            try check(fd)
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }
        return sockets
    }

    /// A listening stream socket of an address family the gateway serves.
    static func check(_ fd: Int32) throws(Problem) {
        func option(_ name: Int32) -> Int32? {
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            return getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0 ? value : nil
        }
        guard let type = option(SO_TYPE) else {
            throw Problem(description: "inherited descriptor \(fd) is not a socket: \(String(cString: strerror(errno)))")
        }
        guard type == Int32(SOCK_STREAM.rawValue) else {
            throw Problem(description: "inherited socket \(fd) is not a stream socket (ListenStream=)")
        }
        guard option(SO_ACCEPTCONN) == 1 else {
            throw Problem(description: "inherited socket \(fd) is not listening")
        }
        guard let family = option(SO_DOMAIN), [AF_INET, AF_INET6, AF_UNIX].contains(family) else {
            throw Problem(description: "inherited socket \(fd) is neither IPv4, IPv6 nor a Unix socket")
        }
    }
}

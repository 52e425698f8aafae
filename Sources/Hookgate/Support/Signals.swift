import Foundation

// Threads: the main thread, at start.

package enum ProcessSignals {
    /// Ignores SIGPIPE (a peer that resets mid-write must not kill the process) and unblocks
    /// the signals the loop watches: a parent may have spawned us with them blocked, and a
    /// blocked SIGTERM would never reach libevent's handler.
    package static func prepare() {
        signal(SIGPIPE, SIG_IGN)
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2] { sigaddset(&set, sig) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}

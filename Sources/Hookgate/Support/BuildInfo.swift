import CLibevent
import COpenSSL
import CSQLite
import Foundation

// Threads: any (constants).

public enum BuildInfo {
    public static let version = "0.1.0"
    public static var libraries: String {
        let ev = String(cString: event_get_version())
        let ssl = String(cString: OpenSSL_version(OPENSSL_VERSION))
        let sq = String(cString: sqlite3_libversion())
        return "libevent \(ev), \(ssl), SQLite \(sq)"
    }
}

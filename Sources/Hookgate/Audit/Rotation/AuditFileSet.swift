import Foundation

// Threads: the CLI's (`hookgate audit verify|list|export|show` over several files).

/// The audit files named on a command line (`--db` given several times, or a directory), in
/// chain order: sorted by the first record each holds (`audit_file`), whatever their names.
/// A directory stands for every audit database directly in it, whatever its name (other files —
/// `-wal`, keys, the checkpoint log, a rotation's unfinished `.next` — are left out).
public struct AuditFileSet {
    public final class File {
        public let path: String
        package let segment: AuditSegment
        private let open: OpenQueries

        init(path: String, segment: AuditSegment, open: OpenQueries) {
            self.path = path
            self.segment = segment
            self.open = open
        }

        /// The file's read-only connection, opened when first needed: a set keeps at most
        /// `OpenQueries.limit` files open at once, whatever the number of files (years of
        /// daily rotation outnumber the descriptors a process may hold).
        public func query() throws(AuditQueryError) -> AuditQuery { try open.query(path) }
    }

    public let files: [File]

    public init(_ arguments: [String]) throws(AuditQueryError) {
        // Each file once (named twice, or by both names for a moment during a rotation); a file
        // found in a directory that is not an audit database is passed over, one named is an error.
        var seen: [FileIdentity] = []
        var files: [File] = []
        let open = OpenQueries()
        /// False: a file found in a directory that is not an audit database.
        func add(_ path: String, found: Bool) throws(AuditQueryError) -> Bool {
            if let identity = FileIdentity(path: path) {
                if seen.contains(identity) { return true }
                seen.append(identity)
            }
            let segment: AuditSegment
            do { segment = try AuditQuery(path: path).segment() } catch { if found { return false } else { throw error } }  // closed at once
            files.append(File(path: path, segment: segment, open: open))
            return true
        }
        for argument in arguments {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) else { throw .noSuchFile(argument) }
            guard isDirectory.boolValue else {
                _ = try add(argument, found: false)
                continue
            }
            var audits = 0
            let names = (try? FileManager.default.contentsOfDirectory(atPath: argument)) ?? []
            for name in names.sorted() where ![ "-wal", "-shm", "-journal", ".next"].contains(where: { name.hasSuffix($0) }) {
                let path = (argument as NSString).appendingPathComponent(name)
                if Self.isSQLite(path), try add(path, found: true) { audits += 1 }
            }
            guard audits > 0 else { throw .notAuditDatabase(argument, why: "the directory holds no audit database") }
        }
        files.sort { $0.segment.firstSeq < $1.segment.firstSeq }
        for (a, b) in zip(files, files.dropFirst()) where a.segment.firstSeq == b.segment.firstSeq {
            throw .notAuditDatabase(b.path, why: "it starts at seq \(b.segment.firstSeq) like \(a.path): two copies of one file, or of two chains")
        }
        self.files = files
    }

    /// A regular file that starts with SQLite's header (a directory may hold keys, logs, copies).
    private static func isSQLite(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: 16)) == Data("SQLite format 3\0".utf8)
    }

    /// `audit verify` over the set: each file's chain from where its `audit_file` row starts it,
    /// and each file continuing the one before (no record missing between them, the seal of a
    /// rotated file matching its last record). `broken` names the file.
    public func verify(progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws(AuditQueryError) -> AuditSetVerification {
        var result = AuditSetVerification()
        var previous: (file: File, last: Int64, hash: String)?
        for file in files {
            let name = (file.path as NSString).lastPathComponent
            let one = try file.query().verify(progress: progress)
            result.perFile.append((file.path, one))
            result.records += one.records
            result.pairs += one.pairs
            result.incomplete += one.incomplete
            if let broken = one.broken {
                (result.broken, result.brokenFile) = (broken, name)
                return result
            }
            if let previous {
                let before = (previous.file.path as NSString).lastPathComponent
                guard previous.file.segment.isSealed else {
                    result.broken = "\(before): the file was not closed by a rotation, yet \(name) follows it"
                    return result
                }
                if file.segment.firstSeq > previous.last + 1 {
                    result.broken = "records \(previous.last + 1)-\(file.segment.firstSeq - 1) are missing: the file that held them, "
                        + "between \(before) and \(name), was deleted or not given"
                    return result
                }
                guard file.segment.firstSeq == previous.last + 1, file.segment.prevHash == previous.hash else {
                    result.broken = "\(name) does not continue \(before): it starts at seq \(file.segment.firstSeq) after hash "
                        + "\(file.segment.prevHash.prefix(16))…, the file before ends at seq \(previous.last) with hash \(previous.hash.prefix(16))…"
                    return result
                }
                // Responses here to calls whose request went into the file before.
                let carried = one.responsesToEarlierFile
                let found = try previous.file.query().requestSeqs(carried)
                if let missing = carried.first(where: { found[$0] == nil }) {
                    (result.broken, result.brokenFile) = ("the response to request \(missing) has no request record in \(before)", name)
                    return result
                }
                result.pairs += carried.count
                result.incomplete -= carried.count
            } else {
                result.firstSeq = file.segment.firstSeq
                result.responsesBeforeFirstFile = one.responsesToEarlierFile.count
            }
            let last = one.lastSeq ?? (file.segment.firstSeq - 1)
            let hash = one.lastHash ?? file.segment.prevHash
            if file.segment.isSealed, file.segment.lastSeq != last || file.segment.lastHash != hash {
                result.broken = "it was closed by a rotation at seq \(file.segment.lastSeq ?? 0) but ends at seq \(last)"
                    + (last < (file.segment.lastSeq ?? 0) ? " (records were cut from its end)" : "")
                result.brokenFile = name
                return result
            }
            previous = (file, last, hash)
            result.lastSeq = last
            result.lastHash = hash
        }
        return result
    }

    /// The file holding record `seq`, if one of the set does.
    public func file(holding seq: Int64) -> File? {
        files.last { $0.segment.firstSeq <= seq }
    }

    /// The file after `file` in the chain, if any.
    public func file(after file: File) -> File? {
        guard let i = files.firstIndex(where: { $0.path == file.path }), i + 1 < files.count else { return nil }
        return files[i + 1]
    }
}

/// The read-only connections of a set's files, the most recently used few kept open.
final class OpenQueries {
    static let limit = 4
    private var open: [(path: String, query: AuditQuery)] = []

    func query(_ path: String) throws(AuditQueryError) -> AuditQuery {
        if let i = open.firstIndex(where: { $0.path == path }) {
            let entry = open.remove(at: i)
            open.append(entry)
            return entry.query
        }
        let query = try AuditQuery(path: path)
        open.append((path, query))
        if open.count > Self.limit { open.removeFirst() }  // closed when its last user lets go
        return query
    }
}

/// The outcome of `hookgate audit verify` over several files.
public struct AuditSetVerification {
    public var records = 0
    public var pairs = 0
    public var incomplete = 0
    /// The first record of the first file (1 unless older files were not given).
    public var firstSeq: Int64 = 1
    public var lastSeq: Int64?
    public var lastHash: String?
    public var broken: String?
    /// The file `broken` is about, when it is about one file (and not about two that do not fit).
    public var brokenFile: String?

    /// `broken` as `verify` prints it: led by the file's name when there are several files.
    public func brokenDescription(severalFiles: Bool) -> String? {
        guard let broken else { return nil }
        guard severalFiles, let brokenFile else { return broken }
        return "\(brokenFile): \(broken)"
    }
    /// Responses in the first file given to requests in a file before it (not given).
    public var responsesBeforeFirstFile = 0
    /// Each file's own verification (derived tables included), in chain order.
    public var perFile: [(path: String, result: AuditVerification)] = []
}

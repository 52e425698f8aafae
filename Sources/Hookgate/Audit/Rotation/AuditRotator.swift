import Foundation

// Threads: the audit writer thread (a rotation), or whoever opens the file for writing (start-up,
// the writer after a failure) when it finds a rotation to finish.

/// Rotates the audit file (`audit.rotate`, docs/audit.md "Rotation") in two steps that a crash
/// between any two system calls leaves recoverable:
///
/// 1. `seal`: take the file for this connection alone — leaving WAL mode, which SQLite allows
///    only when no other connection has the file open, and keeping the lock (`locking_mode =
///    EXCLUSIVE`) — then record in its `audit_file` row its last record and the name it will
///    have. From then on nobody writes to it: whoever opens a sealed file for writing finishes
///    the rotation, or sees it finished, and moves on to the new file.
/// 2. `finish`: write the next file completely under a temporary name (its `audit_file` row says
///    its chain continues the sealed file's last record), give the sealed file its archive name
///    (a hard link: both names hold it for a moment), then rename the next file over
///    `audit.path`, and sync the directory.
///
/// Renaming a database that another connection has open in WAL mode would let two databases
/// share one `-wal` file; holding the only connection, outside WAL mode, is what makes the
/// renames safe. A rotation that finds another connection (a second gateway during a restart,
/// the shipper mid-pass, a reader) is retried a second later.
enum AuditRotator {
    enum Sealing {
        /// Another connection has the file open: nothing changed; retry later.
        case fileInUse
        /// The file holds no record of its own: nothing to rotate (nothing changed).
        case nothingToRotate
        /// Sealed: its `audit_file` row as written, the connection holding the lock.
        case sealed(AuditSegment)
    }

    /// Step 1 on the writer's connection. `finalize` writes what must be in the file before it
    /// closes (the last derived batch), inside the sealing transaction, given the last seq.
    static func seal(_ db: SQLiteConnection, path: String, now: Date, busyTimeoutMs: Int,
                     finalize: (SQLiteConnection, Int64) throws(AuditError) -> Void) throws(AuditError) -> Sealing {
        db.waitWhenBusy(ms: 0)
        defer { db.waitWhenBusy(ms: busyTimeoutMs) }
        try db.execute("PRAGMA locking_mode = EXCLUSIVE")
        let mode: String?
        do throws(AuditError) {
            let statement = try db.prepare("PRAGMA journal_mode = DELETE")
            mode = try statement.step() ? statement.text(0)?.lowercased() : nil
            statement.reset()
        } catch where error.primaryResultCode == 5 || error.primaryResultCode == 6 {  // BUSY, LOCKED
            mode = nil
        }
        guard mode == "delete" else {
            try release(db)
            return .fileInUse
        }
        db.waitWhenBusy(ms: busyTimeoutMs)
        try db.execute("BEGIN EXCLUSIVE")
        do throws(AuditError) {
            var segment = try AuditSegment.read(db)
            let head = try lastRecord(db)
            guard !segment.isSealed, let head, head.seq >= segment.firstSeq else {
                try db.execute("ROLLBACK")
                // Normal locking first: WAL entered in exclusive locking mode keeps the lock.
                try release(db)
                try db.execute("PRAGMA journal_mode = WAL")
                return .nothingToRotate
            }
            try finalize(db, head.seq)
            segment.chain = try AuditSegment.chainID(db, segment)
            let day = String(Timestamp.rfc3339(now).prefix(10))
            segment.sealedAt = Timestamp.rfc3339(now)
            segment.lastSeq = head.seq
            segment.lastHash = head.hash
            segment.archivedAs = AuditSegment.archiveName(path: path, first: segment.firstSeq, last: head.seq, day: day)
            let update = try db.prepare("""
                UPDATE audit_file SET sealed_at = ?1, last_seq = ?2, last_hash = ?3, archived_as = ?4, chain = ?5 WHERE id = 1
                """)
            try update.run([.text(segment.sealedAt!), .int(head.seq), .text(head.hash), .text(segment.archivedAs!),
                            segment.chain.map { .text($0) } ?? .null])
            try db.execute("COMMIT")
            return .sealed(segment)
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
    }

    /// Back to normal locking after a rotation that did not happen (the lock drops at the next read).
    private static func release(_ db: SQLiteConnection) throws(AuditError) {
        try db.execute("PRAGMA locking_mode = NORMAL")
        _ = try db.scalarInt("SELECT count(*) FROM sqlite_master")
    }

    /// Step 2, on a connection to the sealed file that was at `path` with `identity` when it was
    /// opened. Returns the archive's path, or nil when another process finished it first. The
    /// connection is left open, holding the lock; the caller closes it.
    static func finish(_ db: SQLiteConnection, path: String, identity: FileIdentity, durability: Durability,
                       busyTimeoutMs: Int, now: Date) throws(AuditError) -> String? {
        // The sealed file is outside WAL mode: an exclusive transaction takes its lock, and
        // exclusive locking mode keeps it after the (empty) transaction ends.
        try db.execute("PRAGMA locking_mode = EXCLUSIVE")
        try db.execute("BEGIN EXCLUSIVE")
        try db.execute("COMMIT")
        guard FileIdentity(path: path) == identity else { return nil }
        let segment = try AuditSegment.read(db)
        guard segment.isSealed, let last = segment.lastSeq, let lastHash = segment.lastHash, let archived = segment.archivedAs else {
            throw AuditError(.unusable, message: "audit file \(path) is sealed for rotation but its audit_file row is incomplete")
        }
        let directory = (path as NSString).deletingLastPathComponent
        let archivePath = (directory.isEmpty ? "." : directory) + "/" + archived
        let next = path + ".next"
        for leftover in [next, next + "-wal", next + "-shm", next + "-journal"] { unlink(leftover) }
        // Made without an fsync per migration (synchronous NORMAL; calls wait for a rotation):
        // the file counts only once it is renamed into place, after its close has checkpointed
        // and synced it. Half a file left by a crash is never used: it is made again.
        let created = try AuditSchema.openForWriting(path: next, durability: .normal, busyTimeoutMs: busyTimeoutMs, catchUp: false)
        do throws(AuditError) {
            let start = try created.prepare("""
                UPDATE audit_file SET first_seq = ?1, prev_hash = ?2, chain = ?3, previous_file = ?4, started_at = ?5 WHERE id = 1
                """)
            try start.run([.int(last + 1), .text(lastHash), segment.chain.map { .text($0) } ?? .null, .text(archived),
                           .text(Timestamp.rfc3339(now))])
        } catch {
            created.close()
            throw error
        }
        created.close()
        if link(path, archivePath) != 0 {
            let linkError = errno
            guard linkError == EEXIST, FileIdentity(path: archivePath) == identity else {
                throw AuditError(.other, message: "cannot name the rotated audit file \(archivePath): "
                                 + (linkError == EEXIST ? "another file has that name" : String(cString: strerror(linkError))))
            }
        }
        guard rename(next, path) == 0 else {
            throw AuditError(.other, message: "cannot put the new audit file at \(path): \(String(cString: strerror(errno)))")
        }
        let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            fsync(dirFD)
            close(dirFD)
        }
        return archivePath
    }

    /// The newest record's seq and hash, if the file has one.
    static func lastRecord(_ db: SQLiteConnection) throws(AuditError) -> (seq: Int64, hash: String)? {
        let head = try db.prepare("""
            SELECT seq, hash FROM (SELECT seq, hash FROM audit_requests ORDER BY seq DESC LIMIT 1)
            UNION ALL
            SELECT seq, hash FROM (SELECT seq, hash FROM audit_responses ORDER BY seq DESC LIMIT 1)
            ORDER BY seq DESC LIMIT 1
            """)
        defer { head.reset() }
        guard try head.step(), let hash = head.text(1) else { return nil }
        return (head.int(0), hash)
    }
}

/// A file's device and inode: which file a path names right now.
struct FileIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64

    init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}

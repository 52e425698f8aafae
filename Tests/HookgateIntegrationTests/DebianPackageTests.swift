import Foundation
import Testing

/// scripts/package-deb (issue 18): the package builds, lintian finds no error or warning, and it
/// installs into a throwaway root as docs/operations.md ("Install from the Debian package") says:
/// the binary runs there (`--version`, `check-config` of the installed conffile as the `hookgate`
/// user), postinst made the user, the directories and the placeholder certificate, the units
/// point at the packaged binary and are not enabled; a second installation changes nothing;
/// purge removes the package's files and keeps the user and the audit directory.
///
/// The package is the real thing: the test runs the script, so the release build with the Swift
/// runtime linked in (`--static-swift-stdlib`). Measured on the 2-core CI machine: about 70 s for
/// that build from nothing, then about 30 s for lintian. A debug binary would not test what ships,
/// so the cost stays; to keep the release build out of the way of the timing-sensitive tests
/// running beside this one, .ci/run builds the package first (same scratch path, .build-deb), and
/// the script's build here is then a no-op. Run alone, the test builds it itself.
///
/// Root only: dpkg sets root and hookgate ownership in the throwaway root, and the binary is run
/// in it with chroot.
@Suite(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/dpkg-deb")),
       .timeLimit(.minutes(15)))
struct DebianPackageTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    struct Ran {
        let status: Int32
        let output: String
    }

    /// Runs a program to the end, stdout and stderr together (through a file: no pipe to fill).
    static func run(_ executable: String, _ arguments: [String], log directory: String) throws -> Ran {
        let path = directory + "/run-\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let log = try #require(FileHandle(forWritingAtPath: path))
        defer { try? log.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return Ran(status: process.terminationStatus, output: (try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
    }

    /// Owner, group and permission bits of a path.
    static func owner(_ path: String) -> (uid: Int, gid: Int, mode: Int)? {
        guard let a = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        let uid: Int = (a[.ownerAccountID] as? NSNumber)?.intValue ?? -1
        let gid: Int = (a[.groupOwnerAccountID] as? NSNumber)?.intValue ?? -1
        let mode: Int = (a[.posixPermissions] as? NSNumber)?.intValue ?? -1
        return (uid, gid, mode)
    }

    /// The id of `name` in a passwd or group file (third field).
    static func id(_ name: String, in file: String) -> Int? {
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            if fields.count > 2, fields[0] == name { return Int(fields[2]) }
        }
        return nil
    }

    @Test func thePackageBuildsLintsCleanAndInstallsAsDocumented() throws {
        let dir = Harness.tempDir("deb")
        let out = dir + "/out"
        let version = try Self.run(Harness.binary, ["--version"], log: dir).output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.wholeMatch(of: /[0-9]+\.[0-9]+\.[0-9]+/) != nil, "hookgate --version: \(version)")
        let arch = try Self.run("/usr/bin/dpkg", ["--print-architecture"], log: dir).output.trimmingCharacters(in: .whitespacesAndNewlines)

        // --- build --------------------------------------------------------------------------
        let built = try Self.run("/bin/bash", [Self.repository + "/scripts/package-deb", "--out", out], log: dir)
        guard built.status == 0 else {
            Issue.record("scripts/package-deb failed (\(built.status)):\n\(built.output.suffix(4000))")
            return
        }
        let deb = out + "/hookgate_\(version)_\(arch).deb"
        #expect(built.output.split(separator: "\n").last.map(String.init) == deb, "\(built.output.suffix(600))")
        let lintian = try String(contentsOfFile: out + "/hookgate_\(version)_\(arch).lintian.txt", encoding: .utf8)
        let findings = lintian.split(separator: "\n").filter { $0.hasPrefix("E: ") || $0.hasPrefix("W: ") }
        #expect(findings.isEmpty, "lintian: \(findings)")

        // --- control ------------------------------------------------------------------------
        let fields = try Self.run("/usr/bin/dpkg-deb", ["-f", deb, "Package", "Version", "Architecture", "Depends"], log: dir).output
        #expect(fields.contains("Package: hookgate\n") && fields.contains("Version: \(version)\n") && fields.contains("Architecture: \(arch)\n"))
        let dependsLine = fields.split(separator: "\n").first { $0.hasPrefix("Depends: ") }.map { String($0.dropFirst(9)) } ?? ""
        let depends = Set(dependsLine.split(separator: ",").compactMap { $0.split(separator: " ").first.map(String.init) })
        for name in ["libc6", "libevent-2.1-7", "libevent-openssl-2.1-7", "libevent-pthreads-2.1-7", "libssl3", "libsqlite3-0",
                     "libhiredis0.14", "libpq5", "passwd", "openssl"] {
            #expect(depends.contains(name), "Depends: \(dependsLine) lacks \(name)")
        }
        #expect(!dependsLine.lowercased().contains("swift"), "\(dependsLine)")
        let conffiles = try Self.run("/usr/bin/dpkg-deb", ["-I", deb, "conffiles"], log: dir).output
        #expect(conffiles == "/etc/hookgate/config.json\n", "conffiles: \(conffiles)")
        let info = try Self.run("/usr/bin/dpkg-deb", ["-I", deb], log: dir).output
        for script in ["postinst", "prerm", "postrm"] { #expect(info.contains(" \(script) "), "no \(script)") }
        let listing = try Self.run("/usr/bin/dpkg-deb", ["-c", deb], log: dir).output.split(separator: "\n")
        #expect(listing.allSatisfy { $0.contains(" root/root ") }, "files not root:root")
        for (mode, path) in [("drwxr-x---", "./etc/hookgate/"), ("-rw-r-----", "./etc/hookgate/config.json"),
                             ("-rwxr-xr-x", "./usr/bin/hookgate"), ("-rw-r--r--", "./lib/systemd/system/hookgate.service")] {
            #expect(listing.contains { $0.hasPrefix(mode) && $0.hasSuffix(" " + path) }, "\(mode) \(path)")
        }

        // --- install into a throwaway root --------------------------------------------------
        // Maintainer scripts of `dpkg --root` run chrooted into the root, which has no shell or
        // useradd: --force-script-chrootless runs them here with DPKG_ROOT set, which they honour
        // (every path under it, users made in its /etc/passwd). --force-depends: the libraries
        // are the host's (the Depends line is checked above).
        let root = dir + "/root"
        for sub in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc", "proc"] {
            try FileManager.default.createDirectory(atPath: root + "/" + sub, withIntermediateDirectories: true)
        }
        for (file, text) in [("var/lib/dpkg/status", ""), ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
                             ("etc/group", "root:x:0:\n"), ("etc/shadow", "root:*:19000:0:99999:7:::\n"), ("etc/gshadow", "root:*::\n")] {
            try text.write(toFile: root + "/" + file, atomically: false, encoding: .utf8)
        }
        let dpkg = ["--root=\(root)", "--force-script-chrootless", "--force-depends"]
        let installed = try Self.run("/usr/bin/dpkg", dpkg + ["--install", deb], log: dir)
        #expect(installed.status == 0, "\(installed.output)")
        #expect(installed.output.contains("Setting up hookgate (\(version))"))
        #expect(installed.output.contains("hookgate: installed, not enabled."), "\(installed.output)")
        let status = try Self.run("/usr/bin/dpkg", ["--root=\(root)", "-s", "hookgate"], log: dir).output
        #expect(status.contains("Status: install ok installed"), "\(status)")

        // What postinst made, with the owners and modes of docs/operations.md.
        let passwd = (try? String(contentsOfFile: root + "/etc/passwd", encoding: .utf8)) ?? ""
        #expect(passwd.contains("hookgate:x:") && passwd.contains(":/var/lib/hookgate:/usr/sbin/nologin\n"), "\(passwd)")
        let uid = try #require(Self.id("hookgate", in: root + "/etc/passwd"))
        let gid = try #require(Self.id("hookgate", in: root + "/etc/group"))
        #expect(uid > 0 && uid < 1000 && gid > 0 && gid < 1000, "a system user: \(uid):\(gid)")
        for (path, expected) in [("/etc/hookgate", (0, gid, 0o750)), ("/etc/hookgate/config.json", (0, gid, 0o640)),
                                 ("/etc/hookgate/tls.crt", (0, gid, 0o640)), ("/etc/hookgate/tls.key", (0, gid, 0o640)),
                                 ("/var/lib/hookgate", (uid, gid, 0o750)), ("/usr/bin/hookgate", (0, 0, 0o755))] {
            let got = Self.owner(root + path)
            #expect(got?.uid == expected.0 && got?.gid == expected.1 && got?.mode == expected.2,
                    "\(path): \(String(describing: got)), expected \(expected.0):\(expected.1) \(String(expected.2, radix: 8))")
        }
        for path in ["/lib/systemd/system/hookgate.socket", "/usr/share/hookgate/prometheus/hookgate.rules.yml",
                     "/usr/share/hookgate/prometheus/hookgate.rules.test.yml", "/usr/share/hookgate/grafana/hookgate.json",
                     "/usr/share/hookgate/datasette/metadata.yml", "/usr/share/hookgate/haproxy/hookgate.cfg",
                     "/usr/share/doc/hookgate/copyright", "/usr/share/doc/hookgate/changelog.gz",
                     "/usr/share/doc/hookgate/README.Debian.gz", "/usr/share/doc/hookgate/operations.md.gz",
                     "/usr/share/doc/hookgate/examples/config.example.json", "/usr/share/man/man1/hookgate.1.gz"] {
            #expect(FileManager.default.fileExists(atPath: root + path), "\(path) missing")
        }
        // The units run the packaged binary; neither is enabled (postinst only records them).
        let unit = (try? String(contentsOfFile: root + "/lib/systemd/system/hookgate.service", encoding: .utf8)) ?? ""
        #expect(unit.contains("\nExecStart=/usr/bin/hookgate serve --config /etc/hookgate/config.json\n"))
        #expect(unit.contains("\nExecStartPre=/usr/bin/hookgate check-config --config /etc/hookgate/config.json\n"))
        #expect(unit.contains("\nDocumentation=man:hookgate(1)\n") && unit.contains("\nUser=hookgate\n"))
        #expect(!unit.contains("/usr/local"))
        let wants = (try? FileManager.default.subpathsOfDirectory(atPath: root + "/etc/systemd/system")) ?? []
        #expect(!wants.contains { $0.contains("hookgate") }, "enabled on installation: \(wants)")
        #expect(FileManager.default.fileExists(atPath: root + "/var/lib/systemd/deb-systemd-helper-enabled/hookgate.service.dsh-also"))

        // --- run it from the root -----------------------------------------------------------
        // chroot with the host's copies of the libraries it loads (standing in for the packages
        // of Depends) and a /proc of its own: the Swift runtime reads its arguments from
        // /proc/self/cmdline.
        let ldd = try Self.run("/usr/bin/ldd", [root + "/usr/bin/hookgate"], log: dir).output
        #expect(!ldd.contains("libswift") && !ldd.contains("libFoundation") && !ldd.contains("not found"), "\(ldd)")
        for library in ldd.matches(of: /(\/[^ \t\n]+) \(0x/).map({ String($0.output.1) }) {
            try FileManager.default.createDirectory(atPath: root + (library as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            #expect(try Self.run("/bin/cp", ["-L", library, root + library], log: dir).status == 0)
        }
        func chrooted(_ arguments: [String], user: String? = nil) throws -> Ran {
            try Self.run("/usr/bin/unshare", ["--mount", "--pid", "--fork", "--mount-proc=\(root)/proc", "/usr/sbin/chroot"]
                         + (user.map { ["--userspec=\($0)"] } ?? []) + [root, "/usr/bin/hookgate"] + arguments, log: dir)
        }
        let reported = try chrooted(["--version"])
        #expect(reported.status == 0 && reported.output == version + "\n", "\(reported.output)")
        // As the service user, as docs/operations.md says: file permissions are checked too.
        let checked = try chrooted(["check-config", "--config", "/etc/hookgate/config.json"], user: "\(uid):\(gid)")
        #expect(checked.status == 0, "\(checked.output)")
        #expect(checked.output.hasPrefix("/etc/hookgate/config.json: config ok: ") && checked.output.contains("listen https://0.0.0.0:8080"),
                "\(checked.output)")

        // The man page names every command `hookgate --help` lists.
        let help = try chrooted(["--help"]).output
        let commands = help.components(separatedBy: "SUBCOMMANDS:").last?.split(separator: "\n")
            .compactMap { $0.wholeMatch(of: /\ \ ([a-z][a-z-]+) .*/).map { String($0.output.1) } } ?? []
        #expect(commands.count >= 5, "\(help)")
        let man = try Self.run("/bin/gzip", ["-dc", root + "/usr/share/man/man1/hookgate.1.gz"], log: dir).output
            .replacingOccurrences(of: "\\-", with: "-")
        for command in commands { #expect(man.contains(".B \(command)\n"), "hookgate(1) lacks \(command)") }

        // The installed rules pass their unit tests where they are.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool") {
            let rules = try Self.run("/usr/bin/promtool", ["test", "rules", root + "/usr/share/hookgate/prometheus/hookgate.rules.test.yml"], log: dir)
            #expect(rules.status == 0, "\(rules.output)")
        }

        // --- install again (an upgrade's path), then purge -----------------------------------
        let certificate = try Data(contentsOf: URL(fileURLWithPath: root + "/etc/hookgate/tls.crt"))
        try Data("audit".utf8).write(to: URL(fileURLWithPath: root + "/var/lib/hookgate/audit.sqlite3"))
        let again = try Self.run("/usr/bin/dpkg", dpkg + ["--install", deb], log: dir)
        #expect(again.status == 0 && !again.output.contains("installed, not enabled"), "\(again.output)")
        let passwdAgain = (try? String(contentsOfFile: root + "/etc/passwd", encoding: .utf8)) ?? ""
        #expect(passwdAgain.split(separator: "\n").filter { $0.hasPrefix("hookgate:") }.count == 1)
        #expect((try? Data(contentsOf: URL(fileURLWithPath: root + "/etc/hookgate/tls.crt"))) == certificate, "certificate replaced")

        let purged = try Self.run("/usr/bin/dpkg", dpkg + ["--purge", "hookgate"], log: dir)
        #expect(purged.status == 0, "\(purged.output)")
        for path in ["/usr/bin/hookgate", "/lib/systemd/system/hookgate.service", "/etc/hookgate", "/usr/share/hookgate"] {
            #expect(!FileManager.default.fileExists(atPath: root + path), "\(path) left after purge")
        }
        #expect(FileManager.default.fileExists(atPath: root + "/var/lib/hookgate/audit.sqlite3"), "purge removed the audit log")
        #expect(Self.id("hookgate", in: root + "/etc/passwd") == uid, "purge removed the user")
    }
}

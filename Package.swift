// swift-tools-version:6.0
import PackageDescription

// Shared settings: Swift 6 language mode everywhere; C modules stay internal to the
// module that imports them (InternalImportsByDefault), so no libevent/OpenSSL/SQLite
// type leaks out of Hookgate's public API.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "hookgate",
    products: [
        .executable(name: "hookgate", targets: ["hookgate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // Thin C modules: a module map and a header of static-inline wrappers each, no logic
        // (CHiredis, below, adds one C function).
        .systemLibrary(name: "CLibevent", pkgConfig: "libevent_openssl",
                       providers: [.apt(["libevent-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CLibpq", pkgConfig: "libpq",
                       providers: [.apt(["libpq-dev"])]),
        // hiredis's async client; one C function attaches it to libevent (attach.c).
        .target(
            name: "CHiredis",
            linkerSettings: [.linkedLibrary("hiredis")]),
        .target(
            name: "Hookgate",
            dependencies: [
                "CLibevent", "COpenSSL", "CSQLite", "CHiredis", "CLibpq",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // Not the product: the bundled Hookshot simulator with its throwaway PKI (demos, tests),
        // and the audit-path benchmark. They reach the core through `package` declarations.
        .target(
            name: "HookgateSimulator",
            dependencies: [
                "Hookgate", "COpenSSL",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "HookgateBench",
            dependencies: ["Hookgate"],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "hookgate",
            dependencies: [
                "Hookgate", "HookgateSimulator", "HookgateBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        // Test helpers shared by both test targets (temporary directories removed at exit).
        .target(
            name: "HookgateTestSupport",
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings),
        .testTarget(
            name: "HookgateTests",
            dependencies: ["Hookgate", "HookgateTestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "HookgateIntegrationTests",
            // Depends on the executable so that `swift test` builds it: these tests run the
            // real `hookgate` binary (serve, simulate-upstream) over real sockets.
            dependencies: ["Hookgate", "HookgateSimulator", "HookgateTestSupport", "hookgate"],
            swiftSettings: swiftSettings),
    ]
)

// libFuzzer target: the configuration decoder and validator (Config/*.swift):
// `GatewayConfig.parse(_:checkFiles: false)` on arbitrary bytes (no file system access).
// Every refusal must name at least one problem.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    do {
        let config = try GatewayConfig.parse(bytes, checkFiles: false)
        _ = config.version
    } catch {
        guard !error.problems.isEmpty else { fatalError("ConfigError without problems") }
        _ = error.description
    }
    return 0
}

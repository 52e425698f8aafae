// libFuzzer target: the upstream HTTP/1.1 response parser (Upstream/ResponseParser.swift).
//
// Input layout: byte 0 = flags (bit 0: bodyless, i.e. a HEAD response; bit 1: small limits,
// 256-byte head / 512-byte body, to reach the size checks; bits 2-3: chunk count 1...3),
// bytes 1-2 = split points; the rest = the bytes the upstream sends. The response is fed in
// 1-3 chunks, then `finish()` (peer closed) is called if it is still incomplete.
// Also checks a differential property: fed whole, the same bytes give the same outcome
// (same response apart from keep-alive, or an error in both).

enum Outcome: Equatable {
    case complete(status: Int, reason: String, headers: [String], body: [UInt8])
    case failed
}

func run(_ payload: [UInt8], cuts: [Int], bodyless: Bool, small: Bool) -> Outcome {
    var parser = small ? ResponseParser(maxHeaderBytes: 256, maxBodyBytes: 512, bodyless: bodyless)
                       : ResponseParser(bodyless: bodyless)
    var start = 0
    do {
        for end in cuts + [payload.count] {
            if case .complete(let r) = try parser.feed(payload[start..<end]) { return outcome(r) }
            start = end
        }
        return outcome(try parser.finish())
    } catch {
        _ = error.description
        return .failed
    }
}

func outcome(_ r: UpstreamResponse) -> Outcome {
    _ = r.header("content-type")
    return .complete(status: r.status, reason: r.reason, headers: r.headers.map { "\($0.name):\($0.value)" }, body: r.body)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard let input = SplitInput(data, size) else { return 0 }
    let bodyless = input.flags & 1 != 0, small = input.flags & 2 != 0
    input.requireSame(run(input.payload, cuts: input.cuts, bodyless: bodyless, small: small),
                      run(input.payload, cuts: [], bodyless: bodyless, small: small))
    return 0
}

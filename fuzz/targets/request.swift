// libFuzzer target: the main listener's HTTP/1.1 request parser (Server/RequestParser.swift).
//
// Input layout: byte 0 = flags (bit 0: small limits, 128-byte head / 64-byte body, to reach the
// size checks; bit 1: retain bodies; bits 2-3: chunk count 1...3), bytes 1-2 = split points; the
// rest = the bytes a client sends. Requests are parsed one after another (pipelining) until the
// bytes run out or one fails. Checks: the limits hold (no head over the limit, no body over the
// limit, a retained body is as long as counted), and fed whole the same bytes give the same
// requests and the same error.

enum Outcome: Equatable {
    case request(method: String, target: String, headers: [String], bodyLength: Int, body: [UInt8], keepAlive: Bool)
    case failed(RequestError.Kind)
}

func run(_ payload: [UInt8], cuts: [Int], limits: RequestParser.Limits) -> [Outcome] {
    var parser = RequestParser(limits: limits)
    var out: [Outcome] = []
    var start = 0
    for end in cuts + [payload.count] {
        parser.append(payload[start..<end])
        start = end
        parsing: while true {
            switch parser.parse() {
            case .needMore:
                break parsing
            case .awaitingBody:
                continue
            case .complete(let r):
                precondition(r.head.size <= limits.maxHeadBytes, "head over the limit")
                precondition(r.bodyLength <= limits.maxBodyBytes, "body over the limit")
                precondition(!limits.retainBody || r.body.count == r.bodyLength, "retained body length")
                out.append(.request(method: r.head.method, target: r.head.target,
                                    headers: r.head.headers.map { "\($0.name):\($0.value)" },
                                    bodyLength: r.bodyLength, body: r.body, keepAlive: r.head.keepAlive))
                parser.next()
            case .failed(let e):
                _ = e.head.values("authorization")
                _ = e.status
                out.append(.failed(e.kind))
                return out
            }
        }
    }
    _ = parser.partialHead().values("authorization")
    return out
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard let input = SplitInput(data, size) else { return 0 }
    let flags = input.flags
    let limits = flags & 1 != 0
        ? RequestParser.Limits(maxHeadBytes: 128, maxBodyBytes: 64, retainBody: flags & 2 != 0)
        : RequestParser.Limits(maxHeadBytes: 8192, maxBodyBytes: 16384, retainBody: flags & 2 != 0)
    input.requireSame(run(input.payload, cuts: input.cuts, limits: limits), run(input.payload, cuts: [], limits: limits))
    return 0
}

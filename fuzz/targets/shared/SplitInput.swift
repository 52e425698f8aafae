/// How the byte-stream targets (parser, request) read libFuzzer's input: byte 0 holds flags for
/// the target (bits 0-1) and the number of pieces to feed (bits 2-3: one, two or three); bytes
/// 1 and 2 say where to cut; the rest is the stream. A parser must give the same outcome
/// whether the stream arrives whole or in those pieces.
struct SplitInput {
    let flags: UInt8
    let payload: [UInt8]
    /// Where to cut `payload`, sorted (empty: fed whole).
    let cuts: [Int]

    init?(_ data: UnsafePointer<UInt8>, _ size: Int) {
        guard size >= 3 else { return nil }
        flags = data[0]
        let payload = Array(UnsafeBufferPointer(start: data + 3, count: size - 3))
        let chunks = Int((flags >> 2) & 3) % 3 + 1
        var cuts: [Int] = []
        if chunks >= 2, !payload.isEmpty { cuts.append(Int(data[1]) % (payload.count + 1)) }
        if chunks == 3, !payload.isEmpty { cuts.append(Int(data[2]) % (payload.count + 1)) }
        self.payload = payload
        self.cuts = cuts.sorted()
    }

    /// Stops the run (a crash libFuzzer records) when the split feed and the whole feed disagree.
    func requireSame<Outcome: Equatable>(_ split: Outcome, _ whole: Outcome) {
        if split != whole {
            fatalError("split feed \(cuts) gave \(split), whole feed gave \(whole)")
        }
    }
}

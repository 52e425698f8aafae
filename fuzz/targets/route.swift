// libFuzzer target: the request line's method and target (Policy/Route.swift, UUID parsing in
// Support/RequestID.swift) and the Authorization field values (Policy/Credentials.swift).
//
// Input layout: lines separated by LF: method, request-target, then zero or more
// Authorization field values. Round-trip properties are checked: a matched target's canonical
// path matches again to the same ids; an accepted bearer token re-parses to itself.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let lines = bytes.split(separator: 10, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    let method = lines.first ?? ""
    let target = lines.count > 1 ? lines[1] : ""
    switch Route.match(method: method, target: target) {
    case .success(let t):
        guard case .success(let again) = Route.match(method: "POST", target: t.path), again == t else {
            fatalError("canonical path \(t.path) does not match again")
        }
    case .failure(let refusal):
        _ = (refusal.type, refusal.status, refusal.detail, refusal.headers)
    }
    _ = UUIDText.canonical(target)
    let values = Array(lines.dropFirst(2))
    if case .bearer(let token) = Credentials.parse(values) {
        guard Credentials.parse(["Bearer " + token]) == .bearer(token) else {
            fatalError("bearer token \(token) does not re-parse")
        }
    }
    return 0
}

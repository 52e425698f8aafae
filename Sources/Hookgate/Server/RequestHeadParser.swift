// Threads: any (pure values); runs on the loop for every request.

/// The head of a request (request line and fields), parsed strictly: RequestParser.swift
/// finds where it ends, this says what it holds.
extension RequestParser {
    /// Parses a complete head (`bytes` ends with CRLFCRLF).
    static func parseHead(_ bytes: [UInt8]) -> Result<RequestHead, RequestError> {
        let size = bytes.count
        var lineEnd = 0
        while lineEnd + 1 < bytes.count, !(bytes[lineEnd] == 13 && bytes[lineEnd + 1] == 10) { lineEnd += 1 }
        func failure(_ kind: RequestError.Kind, _ detail: String) -> Result<RequestHead, RequestError> {
            .failure(RequestError(kind: kind, detail: detail, head: lenientHead(bytes)))
        }
        // request-line = method SP request-target SP HTTP-version
        let line = bytes[0..<lineEnd]
        if line.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
            return failure(.malformed, "invalid byte in the request line")
        }
        guard let sp1 = line.firstIndex(of: 0x20), sp1 > 0 else {
            return failure(.malformed, "malformed request line")
        }
        let methodBytes = line[0..<sp1]
        guard methodBytes.allSatisfy(isTokenChar) else { return failure(.malformed, "invalid method") }
        let rest = line[(sp1 + 1)...]
        guard let sp2 = rest.firstIndex(of: 0x20), sp2 > rest.startIndex else {
            return failure(.malformed, "malformed request line")
        }
        let targetBytes = line[(sp1 + 1)..<sp2]
        let versionBytes = line[(sp2 + 1)...]
        guard targetBytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return failure(.malformed, "invalid request-target")
        }
        let version: HTTPVersion
        switch parseVersion(versionBytes) {
        case .some(.some(let v)): version = v
        case .some(.none): return failure(.unsupportedVersion, "HTTP version \(String(decoding: versionBytes, as: UTF8.self)) is not supported; use HTTP/1.1")
        case .none: return failure(.malformed, "malformed HTTP version")
        }
        let method = String(decoding: methodBytes, as: UTF8.self)
        let rawTarget = String(decoding: targetBytes, as: UTF8.self)
        guard let target = originForm(targetBytes) else { return failure(.malformed, "invalid absolute-form request-target") }

        var fields: [RequestHead.Field] = []
        fields.reserveCapacity(8)
        var contentLength: Int?
        var transferCodings: [String] = []
        var keepAlive = version == .http11
        var expectsContinue = false
        var hosts = 0
        var pos = lineEnd + 2
        while pos < size {
            var end = pos
            while end + 1 < size, !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
            if end == pos { break }  // the empty line
            let first = bytes[pos]
            if first == 0x20 || first == 0x09 { return failure(.malformed, "obsolete line folding in a header field") }
            guard let colon = bytes[pos..<end].firstIndex(of: UInt8(ascii: ":")), colon > pos else {
                return failure(.malformed, "malformed header field")
            }
            guard bytes[pos..<colon].allSatisfy(isTokenChar) else {
                return failure(.malformed, "invalid header field name (white space before ':' is not allowed)")
            }
            var vs = colon + 1, ve = end
            while vs < ve, bytes[vs] == 0x20 || bytes[vs] == 0x09 { vs += 1 }
            while ve > vs, bytes[ve - 1] == 0x20 || bytes[ve - 1] == 0x09 { ve -= 1 }
            guard bytes[vs..<ve].allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                return failure(.malformed, "invalid byte in a header field value")
            }
            fields.append(RequestHead.Field(name: pos..<colon, value: vs..<ve))
            let value = bytes[vs..<ve]
            switch framingField(bytes[pos..<colon]) {
            case .contentLength:
                guard contentLength == nil else { return failure(.badFraming, "more than one Content-Length") }
                guard !value.isEmpty, value.count <= 15, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                    return failure(.badFraming, "invalid Content-Length")
                }
                contentLength = value.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            case .transferEncoding:
                for coding in value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                    transferCodings.append(String(decoding: coding, as: UTF8.self).trimmingSpaces.lowercased())
                }
            case .connection:
                if HTTPTokens.list(value, contains: "close") { keepAlive = false }
                if version == .http10 && HTTPTokens.list(value, contains: "keep-alive") { keepAlive = true }
            case .expect:
                if version == .http11, ASCII.equalsIgnoringCase(String(decoding: value, as: UTF8.self), "100-continue") {
                    expectsContinue = true
                }
            case .host:
                hosts += 1
                if hosts > 1 { return failure(.malformed, "more than one Host header") }
            case nil:
                break
            }
            pos = end + 2
        }
        var framing = BodyFraming.none
        if !transferCodings.isEmpty {
            guard version == .http11 else { return failure(.badFraming, "Transfer-Encoding in an HTTP/1.0 request") }
            guard contentLength == nil else { return failure(.badFraming, "both Content-Length and Transfer-Encoding") }
            guard transferCodings == ["chunked"] else {
                return failure(.badFraming, "unsupported Transfer-Encoding (only chunked is accepted)")
            }
            framing = .chunked
        } else if let contentLength, contentLength > 0 {
            framing = .length(contentLength)
        }
        if framing == .none { expectsContinue = false }
        return .success(RequestHead(bytes: bytes, fields: fields, method: method, rawTarget: rawTarget, target: target,
                                    version: version, complete: true, keepAlive: keepAlive,
                                    expectsContinue: expectsContinue, framing: framing, size: size))
    }

    /// `HTTP/1.1` or `HTTP/1.0`: `.some(v)`; another `HTTP/d.d`: `.some(nil)`; anything else: nil.
    private static func parseVersion(_ v: ArraySlice<UInt8>) -> HTTPVersion?? {
        guard v.count == 8, v.starts(with: "HTTP/".utf8) else { return nil }
        let major = v[v.startIndex + 5], dot = v[v.startIndex + 6], minor = v[v.startIndex + 7]
        guard (0x30...0x39).contains(major), dot == UInt8(ascii: "."), (0x30...0x39).contains(minor) else { return nil }
        if major == UInt8(ascii: "1") && minor == UInt8(ascii: "1") { return .some(.http11) }
        if major == UInt8(ascii: "1") && minor == UInt8(ascii: "0") { return .some(.http10) }
        return .some(nil)
    }

    /// An absolute-form target without scheme and authority; other forms unchanged. Nil for
    /// an absolute-form target that is not http(s)://authority[path].
    static func originForm(_ target: ArraySlice<UInt8>) -> String? {
        guard let first = target.first, first != UInt8(ascii: "/"), first != UInt8(ascii: "*") else {
            return String(decoding: target, as: UTF8.self)
        }
        let lower = target.prefix(8).map { $0 | 0x20 }
        let schemeLength: Int
        if lower.starts(with: "http://".utf8) {
            schemeLength = 7
        } else if lower.starts(with: "https://".utf8) {
            schemeLength = 8
        } else {
            // authority-form (CONNECT) or something else: routed as received (no route matches).
            return target.contains(UInt8(ascii: "/")) ? nil : String(decoding: target, as: UTF8.self)
        }
        let afterScheme = target.index(target.startIndex, offsetBy: schemeLength)
        let authorityEnd = target[afterScheme...].firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }
            ?? target.endIndex
        guard authorityEnd > afterScheme else { return nil }
        let rest = target[authorityEnd...]
        if rest.first == UInt8(ascii: "?") { return "/" + String(decoding: rest, as: UTF8.self) }
        return rest.isEmpty ? "/" : String(decoding: rest, as: UTF8.self)
    }

    /// Best effort for the record of a request that failed: the request line's first two
    /// words (capped), and every complete, well-formed field line.
    static func lenientHead(_ bytes: [UInt8]) -> RequestHead {
        var lineEnd = 0
        while lineEnd + 1 < bytes.count, !(bytes[lineEnd] == 13 && bytes[lineEnd + 1] == 10) { lineEnd += 1 }
        let hasLine = lineEnd + 1 < bytes.count
        let line = bytes[0..<(hasLine ? lineEnd : min(bytes.count, 2048))]
        let words = line.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: false)
        let method = words.first.map { String(decoding: $0.prefix(32).filter(isTokenChar), as: UTF8.self) } ?? ""
        let targetBytes = words.count > 1 ? words[1].prefix(2048).filter { $0 > 0x20 && $0 < 0x7F } : []
        let rawTarget = String(decoding: targetBytes, as: UTF8.self)
        let target = originForm(targetBytes[...]) ?? rawTarget
        var version = HTTPVersion.http11
        if words.count > 2, words[2].elementsEqual("HTTP/1.0".utf8) { version = .http10 }
        var fields: [RequestHead.Field] = []
        var pos = hasLine ? lineEnd + 2 : bytes.count
        while pos < bytes.count {
            var end = pos
            while end + 1 < bytes.count, !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
            guard end + 1 < bytes.count, end > pos else { break }
            if let colon = bytes[pos..<end].firstIndex(of: UInt8(ascii: ":")), colon > pos,
               bytes[pos..<colon].allSatisfy(isTokenChar) {
                var vs = colon + 1, ve = end
                while vs < ve, bytes[vs] == 0x20 || bytes[vs] == 0x09 { vs += 1 }
                while ve > vs, bytes[ve - 1] == 0x20 || bytes[ve - 1] == 0x09 { ve -= 1 }
                fields.append(RequestHead.Field(name: pos..<colon, value: vs..<ve))
            }
            pos = end + 2
        }
        return RequestHead(bytes: bytes, fields: fields, method: method, rawTarget: rawTarget, target: target,
                           version: version, complete: false, keepAlive: false, expectsContinue: false,
                           framing: .none, size: bytes.count)
    }

    private enum FramingField { case contentLength, transferEncoding, connection, expect, host }

    private static func framingField(_ name: ArraySlice<UInt8>) -> FramingField? {
        func equals(_ literal: StaticString) -> Bool { ASCII.equalsIgnoringCase(name, lowercase: literal) }
        switch name.count {
        case 4: return equals("host") ? .host : nil
        case 6: return equals("expect") ? .expect : nil
        case 10: return equals("connection") ? .connection : nil
        case 14: return equals("content-length") ? .contentLength : nil
        case 17: return equals("transfer-encoding") ? .transferEncoding : nil
        default: return nil
        }
    }

    /// RFC 9110 tchar.
    static func isTokenChar(_ c: UInt8) -> Bool { ASCII.isTokenChar(c) }
}

import Foundation
import Testing
@testable import Hookgate

@Suite struct RouteTests {
    let hook = "E6DB9C1A-D15F-4248-81FA-5B61FC321DEF"
    let req = "29dd8606-4e01-46cb-aca2-dd6022e74865"

    @Test func canonicalisesIdsToLowerCase() throws {
        let t = try Route.match(method: "POST", target: "/hooks/\(hook)/requests/\(req)/redeliver").get()
        #expect(t.hookID == "e6db9c1a-d15f-4248-81fa-5b61fc321def")
        #expect(t.path == "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/\(req)/redeliver")
    }

    @Test func otherPathsAreNotFound() {
        for target in ["/", "/hooks", "/hooks/\(hook)/requests/\(req)/redeliver/", "/hooks/\(hook)/requests/\(req)",
                       "//hooks/\(hook)/requests/\(req)/redeliver", "/hooks//requests/\(req)/redeliver", "*"] {
            guard case .failure(let r) = Route.match(method: "POST", target: target) else {
                Issue.record("\(target) matched"); continue
            }
            #expect(r.status == 404, "\(target)")
        }
    }

    @Test func methodIsCheckedBeforeIds() {
        guard case .failure(let r) = Route.match(method: "GET", target: "/hooks/nope/requests/nope/redeliver?x=1") else {
            Issue.record("matched"); return
        }
        #expect(r.status == 405)
        #expect(r.headers == [Refusal.Header("Allow", "POST")])
    }

    @Test func unknownMethodsAre405OnTheRouteAnd501Elsewhere() {
        guard case .failure(let onRoute) = Route.match(method: "FOO", target: "/hooks/\(hook)/requests/\(req)/redeliver") else {
            Issue.record("matched"); return
        }
        #expect(onRoute.status == 405 && onRoute.headers == [Refusal.Header("Allow", "POST")])
        guard case .failure(let elsewhere) = Route.match(method: "FOO", target: "/other") else { Issue.record("matched"); return }
        #expect(elsewhere.status == 501 && elsewhere.decision == .methodNotAllowed)
        guard case .failure(let known) = Route.match(method: "DELETE", target: "/other") else { Issue.record("matched"); return }
        #expect(known.status == 404)
    }

    @Test func malformedIdsAndQueryAreBadRequests() {
        for target in ["/hooks/not-a-uuid/requests/\(req)/redeliver",
                       "/hooks/\(hook)/requests/\(req.dropLast())/redeliver",
                       "/hooks/\(hook)/requests/\(req)x/redeliver",
                       "/hooks/\(hook)/requests/\(req)/redeliver?",
                       "/hooks/\(hook)/requests/\(req)/redeliver?a=b"] {
            guard case .failure(let r) = Route.match(method: "POST", target: target) else {
                Issue.record("\(target) matched"); continue
            }
            #expect(r.status == 400, "\(target)")
            #expect(r.decision == .badRequest)
        }
    }
}

@Suite struct FormattingTests {
    @Test func timestampsAreUTCWithMilliseconds() {
        #expect(Timestamp.rfc3339(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp.rfc3339(Date(timeIntervalSince1970: 1_601_500_683.353)) == "2020-09-30T21:18:03.353Z")
        #expect(Timestamp.rfc3339(Date(timeIntervalSince1970: 4_102_444_799.999)) == "2099-12-31T23:59:59.999Z")
    }

    @Test func logValuesPrintNumbersBareAndEverythingElseQuoted() {
        #expect(JSON.isBareLiteral("200"))
        #expect(JSON.isBareLiteral("-1.5e3"))
        #expect(JSON.isBareLiteral("true"))
        #expect(!JSON.isBareLiteral("1.2.3"))
        #expect(!JSON.isBareLiteral("claims"))
        #expect(!JSON.isBareLiteral("e6db9c1a"))
        #expect(!JSON.isBareLiteral(""))
        #expect(!JSON.isBareLiteral("inf"))
    }
}

@Suite struct EventFieldsTests {
    @Test func readsTheThreeFieldsAndSkipsEverythingElse() {
        let body = #"{"id":"x","info":{"delivery_id":"nested"},"list":[1,{"a":"}"}],"delivery_id":"d-1","ev\u0065nt":"no","event":"a:\"b\"","n":-1.5e3,"ok":true,"tenant_id":"t-9"}"#
        let f = EventFields.parse(Array(body.utf8))
        #expect(f.deliveryID == "d-1")
        #expect(f.event == "a:\"b\"")
        #expect(f.tenantID == "t-9")
    }

    @Test func nonObjectsAndBrokenBodiesGiveNothing() {
        for body in ["", "[]", "upstream exploded", #"{"delivery_id":1}"#, #"{"delivery_id":"x"#] {
            let f = EventFields.parse(Array(body.utf8))
            #expect(f.deliveryID == nil, "\(body)")
            #expect(f.event == nil)
        }
    }
}

@Suite struct ResponseParserTests {
    @Test func parsesLengthChunkedAndCloseDelimitedBodies() throws {
        var p = ResponseParser()
        guard case .complete(let r) = try p.feed(Array("HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 5\r\nContent-Type: text/plain\r\n\r\nhello".utf8)) else {
            Issue.record("incomplete"); return
        }
        #expect(r.status == 200 && r.body == Array("hello".utf8) && r.keepAlive)
        #expect(r.header("content-type") == "text/plain")

        var c = ResponseParser()
        #expect(try c.feed(Array("HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".utf8)) == .needMore)
        guard case .complete(let r2) = try c.feed(Array("2;x=y\r\nde\r\n0\r\n\r\n".utf8)) else { Issue.record("incomplete"); return }
        #expect(r2.status == 500 && r2.body == Array("abcde".utf8))

        var d = ResponseParser()
        #expect(try d.feed(Array("HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\npart".utf8)) == .needMore)
        let r3 = try d.finish()
        #expect(r3.body == Array("part".utf8) && !r3.keepAlive)
    }

    @Test func refusesMalformedAndOversizedAnswers() {
        var a = ResponseParser()
        #expect(throws: ResponseParser.ParseError.self) { try a.feed(Array("HTTP/1.1 2x0 OK\r\n\r\n".utf8)) }
        var b = ResponseParser(maxBodyBytes: 4)
        #expect(throws: ResponseParser.ParseError.bodyTooLarge(4)) { try b.feed(Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".utf8)) }
        var c = ResponseParser()
        #expect(throws: ResponseParser.ParseError.self) {
            try c.feed(Array("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".utf8))
        }
        var d = ResponseParser()
        #expect(throws: ResponseParser.ParseError.self) { try d.finish() }
        var e = ResponseParser()
        #expect(throws: ResponseParser.ParseError.self) { try e.feed(Array("HTTP/1.1 101 Switching Protocols\r\n\r\n".utf8)) }
        var f = ResponseParser()
        let many = String(repeating: "HTTP/1.1 100 Continue\r\n\r\n", count: ResponseParser.maxInterim + 1)
        #expect(throws: ResponseParser.ParseError.self) { try f.feed(Array(many.utf8)) }
    }

    @Test func interimAnswersAreSkippedAndTheFinalOneRelayed() throws {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        for split in [1, 5, 30, text.utf8.count] {
            var p = ResponseParser()
            var result: UpstreamResponse?
            var i = 0
            let bytes = Array(text.utf8)
            while i < bytes.count, result == nil {
                let end = min(bytes.count, i + split)
                if case .complete(let r) = try p.feed(bytes[i..<end]) { result = r }
                i = end
            }
            let r = try #require(result, "split \(split)")
            #expect(r.status == 200 && r.body == Array("ok".utf8))
            #expect(r.headers.map(\.name) == ["Content-Length"], "the interim fields are not the answer's")
        }
    }
}

@Suite struct ResponseHeadTests {
    @Test func writesLengthDateAndConnectionItselfAndNoInventedContentType() {
        let r = OutgoingResponse(status: 200, headers: [("X-Request-Id", "id1"), ("Content-Length", "999"),
                                                        ("Connection", "keep-alive"), ("Bad\r\nName", "x"), ("Ok", "a\r\nInjected: 1")],
                                 body: Array("hi".utf8))
        let text = String(decoding: r.serialized(date: "Mon, 30 Nov 2026 12:00:00 GMT", keepAlive: false, version: .http11,
                                                 headOnly: false), as: UTF8.self)
        #expect(text == "HTTP/1.1 200 OK\r\nX-Request-Id: id1\r\nContent-Length: 2\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"
                + "Connection: close\r\n\r\nhi")
    }

    @Test func aReasonPhraseWithControlBytesIsReplacedByTheStandardOne() {
        let r = OutgoingResponse(status: 502, reason: "Bad\rGateway", headers: [], body: [])
        let text = String(decoding: r.serialized(date: "d", keepAlive: true, version: .http11, headOnly: false), as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
        let upstream = OutgoingResponse(status: 200, reason: "Fine Thanks", headers: [], body: [])
        #expect(String(decoding: upstream.serialized(date: "d", keepAlive: true, version: .http11, headOnly: false),
                       as: UTF8.self).hasPrefix("HTTP/1.1 200 Fine Thanks\r\n"))
    }

    @Test func headAnswersCarryTheLengthButNoBodyAndHTTP10KeepAliveIsExplicit() {
        let r = OutgoingResponse(status: 405, headers: [], body: Array("12345".utf8))
        let text = String(decoding: r.serialized(date: "d", keepAlive: true, version: .http10, headOnly: true), as: UTF8.self)
        #expect(text == "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 5\r\nDate: d\r\nConnection: keep-alive\r\n\r\n")
    }

    @Test func datesAreIMFFixdate() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
    }
}

@Suite struct RequestIDTests {
    @Test func idsAreVersion7UUIDsThatSortByTime() throws {
        let a = RequestID.make()
        Thread.sleep(forTimeInterval: 0.002)
        let b = RequestID.make()
        #expect(UUIDText.canonical(a) == a)
        #expect(Array(a.utf8)[14] == UInt8(ascii: "7"))
        #expect("89ab".contains(Array(a)[19]))
        #expect(a < b)
        #expect(a != RequestID.make())
        // The first 48 bits are the time in ms.
        let hex = a.replacingOccurrences(of: "-", with: "").prefix(12)
        let ms = try #require(UInt64(hex, radix: 16))
        #expect(abs(Double(ms) / 1000 - Date().timeIntervalSince1970) < 5)
    }

    @Test func theLoopsSourceGivesDistinctVersion7IdsAcrossRefills() {
        let source = RequestIDSource()
        // 1,000 ids use four refills of the 4 KiB random pool.
        let ids = (0..<1_000).map { _ in source.make() }
        #expect(Set(ids).count == ids.count)
        for id in ids {
            #expect(UUIDText.canonical(id) == id)
            #expect(Array(id.utf8)[14] == UInt8(ascii: "7"))
            #expect("89ab".contains(Array(id)[19]))
        }
        // 74 random bits per id: the random parts differ too, not just the time.
        let randomParts = Set(ids.map { $0.suffix(17) })
        #expect(randomParts.count == ids.count)
    }
}

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

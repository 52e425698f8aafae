import Foundation

// Threads: any (values).

/// A parsed JSON document as plain values, so the configuration can be walked by hand and
/// every unknown key and wrong type reported with its exact path.
///
/// Foundation's `JSONSerialization` turns `true`/`false` into `NSNumber`s that also cast to
/// `Int`, and numbers into `NSNumber`s that also cast to `Bool`; `init(foundation:)` tells
/// them apart by the number's Objective-C type code (`c` for booleans).
enum JSONTree: Equatable {
    case null
    case bool(Bool)
    /// A number with an integral value that fits in `Int` (`3`, `3.0` and `3e0` alike).
    case integer(Int)
    /// Any other number.
    case fraction(Double)
    case string(String)
    case array([JSONTree])
    case object([String: JSONTree])

    /// Parses a whole document; the top level may be any JSON value.
    static func parse(_ bytes: [UInt8]) throws -> JSONTree {
        let any = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
        return JSONTree(foundation: any)
    }

    init(foundation value: Any) {
        switch value {
        case is NSNull:
            self = .null
        case let s as String:
            self = .string(s)
        case let n as NSNumber:
            self = JSONTree(number: n)
        case let a as [Any]:
            self = .array(a.map(JSONTree.init(foundation:)))
        case let o as [String: Any]:
            self = .object(o.mapValues(JSONTree.init(foundation:)))
        default:
            // JSONSerialization produces nothing else; treat the impossible as null.
            self = .null
        }
    }

    private init(number n: NSNumber) {
        let code = String(cString: n.objCType)
        switch code {
        case "c", "B":
            self = .bool(n.boolValue)
        case "s", "i", "l", "q", "S", "I", "L", "C":
            self = .integer(n.intValue)
        case "Q":
            let u = n.uint64Value
            self = u <= UInt64(Int.max) ? .integer(Int(u)) : .fraction(n.doubleValue)
        default:
            let d = n.doubleValue
            // Integral doubles within +/- 2^53 are exact integers.
            if d.isFinite, d.rounded(.towardZero) == d, abs(d) <= 9_007_199_254_740_992 {
                self = .integer(Int(d))
            } else {
                self = .fraction(d)
            }
        }
    }

    /// For messages: what the value is, e.g. "a string".
    var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer, .fraction: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "an object"
        }
    }
}

/// Joins JSON paths the way problems name them: `teams[2].rate_limit.burst`.
enum JSONPath {
    static func member(_ base: String, _ key: String) -> String { base.isEmpty ? key : "\(base).\(key)" }
    static func element(_ base: String, _ index: Int) -> String { "\(base)[\(index)]" }
}

/// Reads the members of one JSON object, remembering which keys were read so that the rest
/// can be reported as unknown.
struct ObjectReader {
    let path: String
    private let members: [String: JSONTree]
    private var read: Set<String> = []

    init(_ members: [String: JSONTree], path: String) {
        self.members = members
        self.path = path
    }

    func path(of key: String) -> String { JSONPath.member(path, key) }

    /// Whether `key` is present with a value other than null.
    func has(_ key: String) -> Bool {
        if let v = members[key], v != .null { return true }
        return false
    }

    /// The value of `key`, marking it as known; `nil` when absent or null (null means "absent").
    mutating func take(_ key: String) -> JSONTree? {
        read.insert(key)
        guard let v = members[key], v != .null else { return nil }
        return v
    }

    /// Keys never taken, sorted.
    var unreadKeys: [String] { members.keys.filter { !read.contains($0) }.sorted() }
}

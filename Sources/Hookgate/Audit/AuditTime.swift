import CSQLite
import Foundation

// Threads: any (pure calendar arithmetic for the audit filters).

/// RFC 3339 times as typed, to the stored form.
public enum AuditTime {
    /// The stored UTC form (`YYYY-MM-DDTHH:MM:SS.sssZ`) of an RFC 3339 time: `Z` or an offset
    /// like `+02:00`, optional fractional seconds, `T`, `t` or a space between date and time;
    /// a bare date means midnight UTC. Fractions finer than a millisecond round up to the next
    /// millisecond, so that comparing stored (millisecond) times as strings with `>=` (since)
    /// and `<` (until) gives exactly the instants at or after the time typed / before it.
    /// nil when `text` is not such a time or falls outside years 0000-9999 in UTC.
    public static func storedForm(_ text: String) -> String? {
        guard let ms = epochMilliseconds(text) else { return nil }
        return format(epochMilliseconds: ms)
    }

    static func epochMilliseconds(_ text: String) -> Int64? {
        var p = Scanner(bytes: Array(text.utf8))
        guard let year = p.digits(4), p.skip("-"), let month = p.digits(2), p.skip("-"), let day = p.digits(2),
              (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day) else { return nil }
        var seconds = daysFromCivil(year: year, month: month, day: day) * 86_400
        var ms: Int64 = 0
        if !p.atEnd {
            guard p.skip("T") || p.skip("t") || p.skip(" "),
                  let hour = p.digits(2), p.skip(":"), let minute = p.digits(2), p.skip(":"), let second = p.digits(2),
                  hour < 24, minute < 60, second <= 60 else { return nil }  // 60: a leap second
            seconds += hour * 3600 + minute * 60 + second
            if p.skip(".") {
                let fraction = p.digitRun()
                guard !fraction.isEmpty else { return nil }
                ms = fractionMilliseconds(fraction)
                if fraction.dropFirst(3).contains(where: { $0 != 0 }) { ms += 1 }
            }
            if p.skip("Z") || p.skip("z") {
            } else {
                let sign: Int64
                if p.skip("+") { sign = 1 } else if p.skip("-") { sign = -1 } else { return nil }
                guard let oh = p.digits(2), p.skip(":"), let om = p.digits(2), oh < 24, om < 60 else { return nil }
                seconds -= sign * (oh * 3600 + om * 60)
            }
            guard p.atEnd else { return nil }
        }
        let total = seconds * 1000 + ms
        guard total >= minimum, total <= maximum else { return nil }
        return total
    }

    private static func fractionMilliseconds(_ digits: [Int64]) -> Int64 {
        var ms: Int64 = 0
        for i in 0..<3 { ms = ms * 10 + (i < digits.count ? digits[i] : 0) }
        return ms
    }

    /// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z.
    private static let minimum = daysFromCivil(year: 0, month: 1, day: 1) * 86_400_000
    private static let maximum = daysFromCivil(year: 10_000, month: 1, day: 1) * 86_400_000 - 1

    static func format(epochMilliseconds total: Int64) -> String? {
        guard total >= minimum, total <= maximum else { return nil }
        let days = floorDivide(total, 86_400_000)
        let inDay = total - days * 86_400_000
        let (year, month, day) = civil(fromDays: days)
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(inDay / 3_600_000, 2)):"
            + "\(pad(inDay / 60_000 % 60, 2)):\(pad(inDay / 1000 % 60, 2)).\(pad(inDay % 1000, 3))Z"
    }

    private static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    private static func isLeap(_ year: Int64) -> Bool { year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) }

    private static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    private static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = floorDivide(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = floorDivide(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private struct Scanner {
        let bytes: [UInt8]
        var i = 0

        var atEnd: Bool { i == bytes.count }

        mutating func skip(_ c: Unicode.Scalar) -> Bool {
            guard i < bytes.count, bytes[i] == UInt8(ascii: c) else { return false }
            i += 1
            return true
        }

        mutating func digits(_ n: Int) -> Int64? {
            guard i + n <= bytes.count else { return nil }
            var v: Int64 = 0
            for b in bytes[i..<i + n] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) else { return nil }
                v = v * 10 + Int64(b - UInt8(ascii: "0"))
            }
            i += n
            return v
        }

        mutating func digitRun() -> [Int64] {
            var out: [Int64] = []
            while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) {
                out.append(Int64(bytes[i] - UInt8(ascii: "0")))
                i += 1
            }
            return out
        }
    }
}

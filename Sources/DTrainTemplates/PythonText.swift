/// Python `str` semantics on Swift strings. Python strings are sequences of code points, so
/// lengths, indices and slices here count Unicode scalars (Swift's `String.count` counts
/// grapheme clusters), and equality compares code points exactly (Swift's `==` treats
/// canonically equivalent strings as equal).
enum PythonText {
    /// `str.isspace()` for one code point: the characters `str.strip()` and `str.split()` remove.
    /// Includes NBSP, U+1680, U+2000-U+200A, U+2028/9, U+202F, U+205F, U+3000, U+0085 and
    /// U+001C-U+001F; excludes the zero-width space U+200B.
    static func isWhitespace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// Code-point equality.
    static func equal(_ a: String, _ b: String) -> Bool {
        a.utf8.count == b.utf8.count && a.utf8.elementsEqual(b.utf8)
    }

    /// Code-point order (UTF-8 byte order is the same order).
    static func compare(_ a: String, _ b: String) -> Int {
        var i = a.utf8.makeIterator(), j = b.utf8.makeIterator()
        while true {
            switch (i.next(), j.next()) {
            case (nil, nil): return 0
            case (nil, _): return -1
            case (_, nil): return 1
            case (let x?, let y?): if x != y { return x < y ? -1 : 1 }
            }
        }
    }

    static func length(_ s: String) -> Int { s.unicodeScalars.count }

    static func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }

    /// `str.strip(chars)`, `lstrip`, `rstrip`; nil `chars` strips whitespace.
    static func strip(_ s: String, chars: String?, leading: Bool = true, trailing: Bool = true) -> String {
        let set = chars.map { Set($0.unicodeScalars) }
        func strippable(_ c: Unicode.Scalar) -> Bool { set.map { $0.contains(c) } ?? isWhitespace(c) }
        let view = s.unicodeScalars
        var start = view.startIndex, end = view.endIndex
        if leading {
            while start < end && strippable(view[start]) { start = view.index(after: start) }
        }
        if trailing {
            while end > start {
                let before = view.index(before: end)
                guard strippable(view[before]) else { break }
                end = before
            }
        }
        if start == view.startIndex && end == view.endIndex { return s }
        return String(Substring(view[start..<end]))
    }

    /// Offsets of non-overlapping occurrences of `needle` in `hay`, left to right.
    static func occurrences(_ needle: [Unicode.Scalar], in hay: [Unicode.Scalar], limit: Int = .max) -> [Int] {
        guard !needle.isEmpty, needle.count <= hay.count else { return [] }
        var found: [Int] = []
        var i = 0
        while i + needle.count <= hay.count && found.count < limit {
            if hay[i] == needle[0] && hay[i..<(i + needle.count)].elementsEqual(needle) {
                found.append(i)
                i += needle.count
            } else {
                i += 1
            }
        }
        return found
    }

    /// `str.split(sep, maxsplit)`; a nil separator splits on runs of whitespace and drops empty parts.
    static func split(_ s: String, separator: String?, maxSplit: Int = -1) -> [String] {
        let a = scalars(s)
        guard let separator else {
            var parts: [String] = []
            var i = 0
            while i < a.count {
                while i < a.count && isWhitespace(a[i]) { i += 1 }
                if i == a.count { break }
                if maxSplit >= 0 && parts.count == maxSplit {
                    parts.append(makeString(a[i..<a.count]))  // keeps trailing whitespace
                    return parts
                }
                let start = i
                while i < a.count && !isWhitespace(a[i]) { i += 1 }
                parts.append(makeString(a[start..<i]))
            }
            return parts
        }
        let sep = scalars(separator)
        let hits = occurrences(sep, in: a, limit: maxSplit < 0 ? .max : maxSplit)
        var parts: [String] = []
        var start = 0
        for h in hits {
            parts.append(makeString(a[start..<h]))
            start = h + sep.count
        }
        parts.append(makeString(a[start..<a.count]))
        return parts
    }

    /// `str.rsplit(sep, maxsplit)`.
    static func rsplit(_ s: String, separator: String?, maxSplit: Int = -1) -> [String] {
        if maxSplit < 0 { return split(s, separator: separator) }
        let a = scalars(s)
        var parts: [String] = []
        var end = a.count
        if let separator {
            let sep = scalars(separator)
            var i = a.count - sep.count
            while i >= 0 && parts.count < maxSplit {
                if a[i..<(i + sep.count)].elementsEqual(sep) {
                    parts.append(makeString(a[(i + sep.count)..<end]))
                    end = i
                    i -= sep.count
                } else {
                    i -= 1
                }
            }
            parts.append(makeString(a[0..<end]))
            return parts.reversed()
        }
        while true {
            while end > 0 && isWhitespace(a[end - 1]) { end -= 1 }
            if end == 0 { break }
            if parts.count == maxSplit {
                parts.append(makeString(a[0..<end]))
                break
            }
            var start = end
            while start > 0 && !isWhitespace(a[start - 1]) { start -= 1 }
            parts.append(makeString(a[start..<end]))
            end = start
        }
        return parts.reversed()
    }

    /// `str.splitlines(keepends)`: breaks at \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, U+2028, U+2029.
    static func splitLines(_ s: String, keepEnds: Bool = false) -> [String] {
        let a = scalars(s)
        var lines: [String] = []
        var start = 0, i = 0
        while i < a.count {
            let c = a[i].value
            let isBreak = c == 0x0A || c == 0x0D || c == 0x0B || c == 0x0C || (0x1C...0x1E).contains(c)
                || c == 0x85 || c == 0x2028 || c == 0x2029
            if isBreak {
                var next = i + 1
                if c == 0x0D && next < a.count && a[next] == "\n" { next += 1 }
                lines.append(makeString(a[start..<(keepEnds ? next : i)]))
                start = next
                i = next
            } else {
                i += 1
            }
        }
        if start < a.count { lines.append(makeString(a[start..<a.count])) }
        return lines
    }

    /// `str.replace(old, new, count)`.
    static func replace(_ s: String, _ old: String, _ new: String, count: Int = -1) -> String {
        let a = scalars(s), o = scalars(old), n = new.unicodeScalars
        var out = String.UnicodeScalarView()
        if o.isEmpty {
            // Python inserts `new` before every code point and at the end.
            var done = 0
            for c in a {
                if count < 0 || done < count {
                    out.append(contentsOf: n)
                    done += 1
                }
                out.append(c)
            }
            if count < 0 || done < count { out.append(contentsOf: n) }
            return String(out)
        }
        let hits = occurrences(o, in: a, limit: count < 0 ? .max : count)
        if hits.isEmpty { return s }
        var start = 0
        for h in hits {
            out.append(contentsOf: a[start..<h])
            out.append(contentsOf: n)
            start = h + o.count
        }
        out.append(contentsOf: a[start..<a.count])
        return String(out)
    }

    static func hasPrefix(_ s: String, _ prefix: String) -> Bool { s.utf8.starts(with: prefix.utf8) }

    static func hasSuffix(_ s: String, _ suffix: String) -> Bool {
        s.utf8.count >= suffix.utf8.count && s.utf8.reversed().starts(with: suffix.utf8.reversed())
    }

    /// `str.upper()`: full case mapping, code point by code point.
    static func upper(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars { out += c.properties.uppercaseMapping }
        return out
    }

    /// `str.lower()`: full case mapping, with Greek final sigma as Python applies it.
    static func lower(_ s: String) -> String {
        let a = scalars(s)
        var out = ""
        for (i, c) in a.enumerated() {
            if c == "\u{03A3}" {
                out += finalSigma(a, i) ? "\u{03C2}" : "\u{03C3}"
            } else {
                out += c.properties.lowercaseMapping
            }
        }
        return out
    }

    /// Whether the capital sigma at `i` ends a word (a cased letter before, none after, skipping
    /// case-ignorable code points).
    private static func finalSigma(_ a: [Unicode.Scalar], _ i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && a[j].properties.isCaseIgnorable { j -= 1 }
        guard j >= 0 && a[j].properties.isCased else { return false }
        var k = i + 1
        while k < a.count && a[k].properties.isCaseIgnorable { k += 1 }
        return !(k < a.count && a[k].properties.isCased)
    }

    /// `str.title()`: title-case after an uncased code point, lower-case after a cased one.
    static func title(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s.unicodeScalars {
            out += previousCased ? c.properties.lowercaseMapping : c.properties.titlecaseMapping
            previousCased = c.properties.isCased
        }
        return out
    }

    /// `str.capitalize()`: the first code point title-cased, the rest lower-cased.
    static func capitalize(_ s: String) -> String {
        guard let first = s.unicodeScalars.first else { return s }
        return first.properties.titlecaseMapping + lower(String(Substring(s.unicodeScalars.dropFirst())))
    }

    /// jinja2's `title` filter: words begin after runs of `-`, whitespace, `(`, `{`, `[` or `<`; each
    /// word's first code point is upper-cased and the rest lower-cased.
    static func jinjaTitle(_ s: String) -> String {
        func isBoundary(_ c: Unicode.Scalar) -> Bool {
            c == "-" || c == "(" || c == "{" || c == "[" || c == "<" || isWhitespace(c)
        }
        let a = scalars(s)
        var out = ""
        var i = 0
        while i < a.count {
            if isBoundary(a[i]) {
                out.unicodeScalars.append(a[i])
                i += 1
                continue
            }
            let start = i
            while i < a.count && !isBoundary(a[i]) { i += 1 }
            out += upper(String(a[start])) + lower(makeString(a[(start + 1)..<i]))
        }
        return out
    }

    /// Python's `repr(str)`: single quotes unless the text has a single quote and no double quote;
    /// unprintable code points as \x.., \u.... or \U.........
    static func repr(_ s: String) -> String {
        let quote: Unicode.Scalar = s.unicodeScalars.contains("'") && !s.unicodeScalars.contains("\"") ? "\"" : "'"
        var out = String.UnicodeScalarView()
        out.append(quote)
        for c in s.unicodeScalars {
            switch c {
            case quote, "\\":
                out.append("\\")
                out.append(c)
            case "\t": out.append(contentsOf: "\\t".unicodeScalars)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            default:
                if isPrintable(c) {
                    out.append(c)
                } else {
                    let v = c.value
                    let hex = String(v, radix: 16)
                    let (prefix, width) = v < 0x100 ? ("\\x", 2) : v < 0x10000 ? ("\\u", 4) : ("\\U", 8)
                    out.append(contentsOf: (prefix + String(repeating: "0", count: width - hex.count) + hex).unicodeScalars)
                }
            }
        }
        out.append(quote)
        return String(out)
    }

    /// `str.isprintable()` for one code point: not a control, format, surrogate, private-use,
    /// unassigned, line/paragraph separator, or a space other than U+0020.
    static func isPrintable(_ c: Unicode.Scalar) -> Bool {
        if c == " " { return true }
        switch c.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator,
             .spaceSeparator:
            return false
        default:
            return true
        }
    }

    /// Python's `repr(float)`: the shortest round-tripping digits, in fixed notation when the
    /// decimal exponent is in -4 ..< 16, otherwise as `d.ddde+XX`.
    static func floatRepr(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description also gives the shortest round-tripping digits; re-lay them out.
        let text = "\(abs(d))"
        var mantissa = text
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = String(text[..<e])
            exponent = Int(text[text.index(after: e)...]) ?? 0
        }
        let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
        let intPart = String(parts[0])
        let fracPart = parts.count > 1 ? String(parts[1]) : ""
        var digits = intPart + fracPart
        var point = intPart.count + exponent  // decimal point position after `point` digits
        // Normalise: no leading or trailing zeros in the digit string.
        while digits.hasPrefix("0") && digits.count > 1 {
            digits.removeFirst()
            point -= 1
        }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let sign = d < 0 ? "-" : ""
        if point > -4 && point <= 16 {
            if point <= 0 {
                return sign + "0." + String(repeating: "0", count: -point) + digits
            }
            if point >= digits.count {
                return sign + digits + String(repeating: "0", count: point - digits.count) + ".0"
            }
            let i = digits.index(digits.startIndex, offsetBy: point)
            return sign + digits[..<i] + "." + digits[i...]
        }
        let exp = point - 1
        let expText = (exp < 0 ? "-" : "+") + (abs(exp) < 10 ? "0" : "") + String(abs(exp))
        let first = digits.prefix(1)
        let rest = digits.dropFirst()
        return sign + first + (rest.isEmpty ? "" : "." + rest) + "e" + expText
    }
}

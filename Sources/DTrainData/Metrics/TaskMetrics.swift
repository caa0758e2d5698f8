// Task metrics for generated answers against references, each defined as the package users
// report it with:
//   exact match, token F1   SQuAD v2.0's evaluation (lowercase, strip ASCII punctuation and the
//                           articles a/an/the, collapse whitespace); F1 over bag-of-words overlap
//   ROUGE-L F               rouge-score 0.1.2, no stemming (lowercase, non-[a-z0-9] as spaces),
//                           longest common subsequence, one score per pair
//   corpus BLEU             sacreBLEU 2.x defaults: 13a tokenisation, n-grams 1-4, exp smoothing,
//                           brevity penalty over the corpus, on the 0-100 scale
// Tests/python/make_metric_cases.py computes the expected values with those packages.
import Foundation

/// Scores of answers against references.
public enum TaskMetrics {
    // MARK: SQuAD

    /// SQuAD's answer normalisation.
    public static func squadNormalized(_ text: String) -> String {
        let lowered = text.lowercased()
        let punctuation = Set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
        let noPunctuation = String(lowered.filter { !punctuation.contains($0) })
        let noArticles = articles.stringByReplacingMatches(in: noPunctuation, range: NSRange(noPunctuation.startIndex..., in: noPunctuation),
                                                           withTemplate: " ")
        return pythonSplit(noArticles).joined(separator: " ")
    }

    private static let articles = try! NSRegularExpression(pattern: #"\b(a|an|the)\b"#)

    /// 1 when the normalised answer equals the normalised reference, else 0.
    public static func exactMatch(_ prediction: String, _ reference: String) -> Double {
        squadNormalized(prediction) == squadNormalized(reference) ? 1 : 0
    }

    /// SQuAD's token F1; when either side normalises to no tokens, 1 if both do, else 0.
    public static func tokenF1(_ prediction: String, _ reference: String) -> Double {
        let p = pythonSplit(squadNormalized(prediction)), r = pythonSplit(squadNormalized(reference))
        if p.isEmpty || r.isEmpty { return p == r ? 1 : 0 }
        var counts: [Substring: Int] = [:]
        for t in r { counts[t, default: 0] += 1 }
        var same = 0
        for t in p where (counts[t] ?? 0) > 0 { counts[t]! -= 1; same += 1 }
        if same == 0 { return 0 }
        let precision = Double(same) / Double(p.count), recall = Double(same) / Double(r.count)
        return 2 * precision * recall / (precision + recall)
    }

    // MARK: ROUGE-L

    /// rouge-score's tokens: lowercased, every run of characters outside [a-z0-9] a separator.
    public static func rougeTokens(_ text: String) -> [Substring] {
        let lowered = text.lowercased()
        var tokens: [Substring] = []
        var start: String.Index? = nil
        var i = lowered.startIndex
        while i < lowered.endIndex {
            let c = lowered[i]
            let keep = c.unicodeScalars.count == 1 && { let v = c.unicodeScalars.first!.value; return (0x61...0x7A).contains(v) || (0x30...0x39).contains(v) }()
            if keep { if start == nil { start = i } } else if let s = start { tokens.append(lowered[s..<i]); start = nil }
            i = lowered.index(after: i)
        }
        if let s = start { tokens.append(lowered[s...]) }
        return tokens
    }

    /// ROUGE-L F-measure of one prediction against its reference (0 when either has no tokens).
    public static func rougeL(_ prediction: String, _ reference: String) -> Double {
        let p = rougeTokens(prediction), r = rougeTokens(reference)
        guard !p.isEmpty, !r.isEmpty else { return 0 }
        // One row of the LCS table at a time.
        var previous = [Int](repeating: 0, count: p.count + 1), current = previous
        for i in 1...r.count {
            for j in 1...p.count {
                current[j] = r[i - 1] == p[j - 1] ? previous[j - 1] + 1 : max(previous[j], current[j - 1])
            }
            swap(&previous, &current)
        }
        let lcs = Double(previous[p.count])
        let precision = lcs / Double(p.count), recall = lcs / Double(r.count)
        return precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
    }

    // MARK: BLEU

    /// sacreBLEU's 13a tokenisation (mteval-v13a's): punctuation and symbols split off, periods and
    /// commas split unless between digits, a dash after a digit split.
    public static func tokenize13a(_ line: String) -> String {
        var text = line.replacingOccurrences(of: "<skipped>", with: "").replacingOccurrences(of: "-\n", with: "")
            .replacingOccurrences(of: "\n", with: " ")
        if text.contains("&") {
            text = text.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
                .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
        }
        text = " \(text) "
        for (pattern, template) in tokenRules {
            text = pattern.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: template)
        }
        return pythonSplit(text).joined(separator: " ")
    }

    private static let tokenRules: [(NSRegularExpression, String)] = [
        (try! NSRegularExpression(pattern: #"([\{-\~\[-\` -\&\(-\+\:-\@\/])"#), " $1 "),
        (try! NSRegularExpression(pattern: #"([^0-9])([\.,])"#), "$1 $2 "),
        (try! NSRegularExpression(pattern: #"([\.,])([^0-9])"#), " $1 $2"),
        (try! NSRegularExpression(pattern: #"([0-9])(-)"#), "$1 $2 "),
    ]

    /// Corpus BLEU (0-100) of `predictions` against one reference each.
    public static func corpusBLEU(_ predictions: [String], _ references: [String]) -> Double {
        precondition(predictions.count == references.count, "corpusBLEU: \(predictions.count) predictions for \(references.count) references")
        let order = 4
        var correct = [Int](repeating: 0, count: order), total = correct
        var systemLength = 0, referenceLength = 0
        for (prediction, reference) in zip(predictions, references) {
            let hyp = pythonSplit(tokenize13a(String(prediction.reversed().drop { $0.isPythonSpace }.reversed())))
            let ref = pythonSplit(tokenize13a(String(reference.reversed().drop { $0.isPythonSpace }.reversed())))
            systemLength += hyp.count
            referenceLength += ref.count
            for n in 1...order {
                let refCounts = ngrams(ref, n)
                for (gram, count) in ngrams(hyp, n) { correct[n - 1] += min(count, refCounts[gram] ?? 0) }
                total[n - 1] += max(0, hyp.count - n + 1)
            }
        }
        var precisions = [Double](repeating: 0, count: order)
        var smooth = 1.0
        for n in 1...order {
            if total[n - 1] == 0 { break }
            if correct[n - 1] == 0 {
                smooth *= 2
                precisions[n - 1] = 100 / (smooth * Double(total[n - 1]))
            } else {
                precisions[n - 1] = 100 * Double(correct[n - 1]) / Double(total[n - 1])
            }
        }
        let brevity = systemLength < referenceLength ? (systemLength > 0 ? exp(1 - Double(referenceLength) / Double(systemLength)) : 0) : 1
        // sacreBLEU takes log(0) as -9999999999: a corpus without any n-gram of some order scores 0.
        let logs = precisions.map { $0 > 0 ? log($0) : -9_999_999_999 }
        return brevity * exp(logs.reduce(0, +) / Double(order))
    }

    private static func ngrams(_ tokens: [Substring], _ n: Int) -> [ArraySlice<Substring>: Int] {
        var out: [ArraySlice<Substring>: Int] = [:]
        guard tokens.count >= n else { return out }
        for i in 0...(tokens.count - n) { out[tokens[i..<(i + n)], default: 0] += 1 }
        return out
    }

    /// Python's `str.split()`: runs of whitespace separate, none at either end.
    static func pythonSplit(_ text: String) -> [Substring] {
        text.split(whereSeparator: \.isPythonSpace)
    }
}

extension Character {
    /// Whitespace as Python's `str.split()` sees it.
    var isPythonSpace: Bool {
        unicodeScalars.allSatisfy { s in
            switch s.value {
            case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
            default: return false
            }
        }
    }
}

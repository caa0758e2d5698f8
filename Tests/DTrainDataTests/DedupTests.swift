// Exact and near-duplicate detection: shingles, the MinHash estimate, LSH candidates, the exact
// Jaccard check, and the Deduplicator's verdicts on records.
import DTrainData
import Foundation
import Testing

/// A deterministic pseudo-random text of `n` words drawn from a 2000-word vocabulary.
private func randomText(_ n: Int, seed: UInt64) -> [String] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<n).map { _ in
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return "w\(state % 2000)"
    }
}

@Suite struct DedupTests {
    @Test func shinglesIgnoreCasePunctuationAndSpacing() {
        let h = MinHasher()
        let a = h.shingles("The quick brown fox jumps over the lazy dog.")
        let b = h.shingles("the QUICK   brown fox, jumps over the lazy dog")
        #expect(a == b)
        #expect(a.count == 5)   // 9 words, 5-word shingles
        #expect(h.shingles("").isEmpty)
        #expect(h.shingles("!!! ---").isEmpty)
        #expect(h.shingles("two words").count == 1)   // fewer words than a shingle: one shingle of all
        #expect(h.shingles("two words") != h.shingles("words two"))
    }

    @Test func exactJaccardOfShingleSets() {
        let h = MinHasher()
        let words = randomText(200, seed: 1)
        var edited = words
        for i in stride(from: 0, to: 200, by: 50) { edited[i] = "changed" }   // 4 edits
        let a = MinHasher.distinct(h.shingles(words.joined(separator: " ")))
        let b = MinHasher.distinct(h.shingles(edited.joined(separator: " ")))
        // Each edit changes the 5 shingles that contain it (fewer at the start): |A ∩ B| = 196 - 16 = 180 of 196 each.
        #expect(a.count == 196 && b.count == 196)
        #expect(abs(MinHasher.jaccard(a, b) - 180.0 / 212.0) < 1e-12)
        #expect(MinHasher.jaccard(a, a) == 1)
    }

    @Test func minHashEstimatesJaccard() {
        // Over many pairs with a known Jaccard, the fraction of equal minima is unbiased.
        let h = MinHasher()
        var total = 0.0
        let pairs = 40
        for p in 0..<pairs {
            // Two sets of 360 shingles sharing 320 (union 400): J = 320 / 400 = 0.8.
            let base = (0..<360).map { UInt32(truncatingIfNeeded: (p * 1000 + $0) &* 2_654_435_761) }
            let a = Array(base[0..<320]) + Array(base[320..<360])
            let b = Array(base[0..<320]) + (0..<40).map { UInt32(truncatingIfNeeded: (p * 1000 + 500 + $0) &* 2_654_435_761) }
            let sa = h.signature(a), sb = h.signature(b)
            total += Double(zip(sa, sb).filter { $0 == $1 }.count) / Double(sa.count)
        }
        let mean = total / Double(pairs)
        // Standard error of the mean: sqrt(0.8 * 0.2 / 128 / 40) = 0.0056; allow 4 of them.
        let expected = 320.0 / 400.0
        #expect(abs(mean - expected) < 0.023, "mean estimate \(mean), expected \(expected)")
    }

    @Test func deduplicatorFindsExactAndNearDuplicates() {
        let dedup = Deduplicator()
        let words = randomText(300, seed: 7)
        var near = words
        near[100] = "edited"; near[200] = "again"   // Jaccard 286/306 ≈ 0.93
        var far = words
        for i in stride(from: 0, to: 300, by: 10) { far[i] = "x\(i)" }   // half the shingles changed: J ≈ 0.33
        let original = DataRecord.text(words.joined(separator: " "))
        #expect(dedup.check(id: 0, record: original) == .unique)
        #expect(dedup.check(id: 1, record: .text(words.joined(separator: " "))) == .exact(of: 0))
        guard case .near(of: 0, let j) = dedup.check(id: 2, record: .text(near.joined(separator: " "))) else {
            Issue.record("near-duplicate not found")
            return
        }
        #expect(abs(j - 286.0 / 306.0) < 1e-9)
        #expect(dedup.check(id: 3, record: .text(far.joined(separator: " "))) == .unique)
        #expect(dedup.check(id: 4, record: .text(randomText(300, seed: 8).joined(separator: " "))) == .unique)
        // Same content in another format is not an exact duplicate (the format is part of the content).
        #expect(dedup.check(id: 5, record: .promptCompletion(prompt: "", completion: words.joined(separator: " ")))
                != .exact(of: 0))
        // Chat: key order, spacing and column names do not matter; system prompts are ignored for near.
        let chat1 = DataRecord.chat([ChatTurn(role: "system", content: "Be nice."), ChatTurn(role: "user", content: "What is two plus two?"),
                                     ChatTurn(role: "assistant", content: "It is four.")])
        let chat2 = DataRecord.chat([ChatTurn(role: "system", content: "Be terse."), ChatTurn(role: "user", content: "What is two plus two?"),
                                     ChatTurn(role: "assistant", content: "It is four.")])
        #expect(dedup.check(id: 6, record: chat1) == .unique)
        #expect(dedup.check(id: 7, record: chat1) == .exact(of: 6))
        #expect(dedup.check(id: 8, record: chat2) == .near(of: 6, jaccard: 1))
    }

    @Test func belowThresholdIsNotANearDuplicate() {
        let dedup = Deduplicator(options: NearDuplicateOptions(threshold: 0.95))
        let words = randomText(300, seed: 11)
        var edited = words
        for i in [50, 100, 150, 200, 250] { edited[i] = "edit\(i)" }   // J = 271/321 ≈ 0.84
        #expect(dedup.check(id: 0, record: .text(words.joined(separator: " "))) == .unique)
        #expect(dedup.check(id: 1, record: .text(edited.joined(separator: " "))) == .unique)
        #expect(Deduplicator().check(id: 0, record: .text("a")) == .unique)
    }

    @Test func contentHashIsStableAndSeeded() {
        let bytes = Array("hello world, a stable hash".utf8)
        #expect(ContentHash.hash(bytes, seed: 1) == ContentHash.hash(bytes, seed: 1))
        #expect(ContentHash.hash(bytes, seed: 1) != ContentHash.hash(bytes, seed: 2))
        #expect(ContentHash.hash(Array(bytes.dropLast()), seed: 1) != ContentHash.hash(bytes, seed: 1))
        // Every length around the 16-byte step hashes differently.
        let hashes = (0..<40).map { ContentHash.hash(Array(repeating: UInt8(0), count: $0)) }
        #expect(Set(hashes).count == 40)
    }
}

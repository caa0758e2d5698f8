// Near-duplicate detection: word shingles, MinHash signatures, LSH banding, exact Jaccard check.
//
// A text's words are its runs of ASCII letters and digits and non-ASCII bytes, ASCII lowercased
// (so case, punctuation and spacing do not matter). Its shingles are the hashes of every run of
// `shingleWords` consecutive words (a text with fewer words has one shingle: all of them). Two
// texts are near-duplicates when the Jaccard similarity of their shingle sets is at least
// `threshold`.
//
// Comparing every pair is quadratic, so candidates come from MinHash + LSH: `permutations` hash
// functions h_j(x) = m ^ (m >> 16), m = (x ^ seed_j) * odd_j mod 2^32 (bijections of the
// already well-mixed 32-bit shingle hashes; 4 vector operations per function), each keeping its minimum over
// the shingles; the probability that two texts agree on one minimum is their Jaccard J. The
// signature is cut into `bands` bands of r = permutations / bands rows; texts sharing any whole
// band are candidates, with probability 1 - (1 - J^r)^bands: for 16 bands of 8 rows, 0.95 at
// J = 0.8 and 0.99 at J = 0.85, and 0.06 at J = 0.5. Every candidate is then checked with the
// exact Jaccard of the two shingle sets, so a reported near-duplicate is always >= threshold.

/// Settings of near-duplicate detection.
public struct NearDuplicateOptions: Sendable, Equatable {
    /// Words per shingle.
    public var shingleWords: Int
    /// MinHash functions; a multiple of `bands`.
    public var permutations: Int
    /// LSH bands.
    public var bands: Int
    /// Least exact Jaccard similarity of two shingle sets that makes them near-duplicates.
    public var threshold: Double
    /// Most candidates checked exactly per text (bounds the work on highly repetitive data).
    public var maxCandidates: Int

    public init(shingleWords: Int = 5, permutations: Int = 128, bands: Int = 16, threshold: Double = 0.8,
                maxCandidates: Int = 64) {
        precondition(permutations > 0 && permutations % bands == 0, "permutations must be a multiple of bands")
        self.shingleWords = shingleWords
        self.permutations = permutations
        self.bands = bands
        self.threshold = threshold
        self.maxCandidates = maxCandidates
    }
}

/// Shingling and MinHash signatures.
public struct MinHasher: Sendable {
    public let options: NearDuplicateOptions
    /// Per hash function j: h_j(x) = ((x ^ seed_j) * multiplier_j) ^ (that >> 16), multiplier odd.
    private let seedTable: [UInt32]
    private let multipliers: [UInt32]

    public init(options: NearDuplicateOptions = NearDuplicateOptions()) {
        self.options = options
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var seeds = [UInt32](), multipliers = [UInt32]()
        for _ in 0..<options.permutations {
            state = state &+ 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            seeds.append(UInt32(truncatingIfNeeded: z))
            multipliers.append(UInt32(truncatingIfNeeded: z >> 32) | 1)
        }
        self.seedTable = seeds
        self.multipliers = multipliers
    }

    /// The 32-bit shingle hashes of `text`, in text order, repeats included (empty when it has
    /// no word). MinHash does not need them distinct; `distinct` makes the set for an exact
    /// Jaccard. (32 bits: two different shingles of two texts collide with probability 2^-32,
    /// far below what moves a Jaccard similarity.)
    public func shingles(_ text: String) -> [UInt32] {
        var out = [UInt32]()
        let w = max(options.shingleWords, 1)
        // Rolling polynomial hash of the last `w` word hashes: sum of word_i * K^(w-1-i).
        let k: UInt64 = 0x9E37_79B9_7F4A_7C15
        var kw: UInt64 = 1   // K^(w-1)
        for _ in 1..<w { kw = kw &* k }
        let window = UnsafeMutablePointer<UInt64>.allocate(capacity: w)
        defer { window.deallocate() }
        var words = 0
        var rolling: UInt64 = 0
        var text = text
        text.withUTF8 { buf in
            out.reserveCapacity(buf.count / 5)
            // A word's hash: its lowercased bytes packed 8 to a word, each full word mixed in.
            var packed: UInt64 = 0
            var h: UInt64 = 0
            var length = 0
            for b in buf {
                let isWord = (b >= 0x30 && b <= 0x39) || ((b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A) || b >= 0x80
                if isWord {
                    let c = (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
                    packed = packed << 8 | UInt64(c)
                    length += 1
                    if length & 7 == 0 {
                        h = ContentHash.mix(h ^ packed, 0xE703_7ED1_A0B4_28DB)
                        packed = 0
                    }
                    continue
                }
                guard length > 0 else { continue }
                let word = ContentHash.mix(h ^ packed ^ UInt64(length) &* 0x8EBC_6AF0_9C88_C6E3, 0xA076_1D64_78BD_642F)
                let slot = words % w
                if words >= w { rolling = rolling &- window[slot] &* kw }
                rolling = rolling &* k &+ word
                window[slot] = word
                words += 1
                if words >= w { out.append(MinHasher.finish(rolling)) }
                packed = 0
                h = 0
                length = 0
            }
            if length > 0 {
                let word = ContentHash.mix(h ^ packed ^ UInt64(length) &* 0x8EBC_6AF0_9C88_C6E3, 0xA076_1D64_78BD_642F)
                let slot = words % w
                if words >= w { rolling = rolling &- window[slot] &* kw }
                rolling = rolling &* k &+ word
                window[slot] = word
                words += 1
                if words >= w { out.append(MinHasher.finish(rolling)) }
            }
        }
        if words > 0 && words < w { out.append(MinHasher.finish(rolling)) }
        return out
    }

    @inline(__always)
    static func finish(_ h: UInt64) -> UInt32 {
        let m = ContentHash.mix(h, 0xA076_1D64_78BD_642F)
        return UInt32(truncatingIfNeeded: m ^ (m >> 32))
    }

    /// `shingles` sorted, repeats removed: the set `jaccard` compares.
    public static func distinct(_ shingles: [UInt32]) -> [UInt32] {
        var out = shingles
        out.sort()
        var unique = 0
        for v in out where unique == 0 || out[unique - 1] != v {
            out[unique] = v
            unique += 1
        }
        out.removeLast(out.count - unique)
        return out
    }

    /// The MinHash signature of a shingle list: `permutations` minima. (A plain loop over the
    /// functions, which the compiler vectorizes: 8 lanes of 32-bit multiplies with AVX2.)
    public func signature(_ shingles: [UInt32]) -> [UInt32] {
        let k = options.permutations
        var mins = [UInt32](repeating: .max, count: k)
        let sd = seedTable, mu = multipliers
        sd.withUnsafeBufferPointer { sd in
            mu.withUnsafeBufferPointer { mu in
                mins.withUnsafeMutableBufferPointer { m in
                    for x in shingles {
                        for j in 0..<k {
                            var h = (x ^ sd[j]) &* mu[j]
                            h ^= h >> 16
                            m[j] = h < m[j] ? h : m[j]
                        }
                    }
                }
            }
        }
        return mins
    }

    /// Exact Jaccard similarity of two sorted, distinct shingle sets (see `distinct`).
    public static func jaccard(_ a: [UInt32], _ b: [UInt32]) -> Double {
        if a.isEmpty && b.isEmpty { return 1 }
        var i = 0, j = 0, common = 0
        while i < a.count && j < b.count {
            if a[i] == b[j] { common += 1; i += 1; j += 1 } else if a[i] < b[j] { i += 1 } else { j += 1 }
        }
        return Double(common) / Double(a.count + b.count - common)
    }
}

/// Texts seen so far, indexed for near-duplicate queries.
///
/// Shingle lists are sorted into sets only when a candidate needs an exact Jaccard check, so
/// data with few near-duplicates pays for hashing and signatures only.
public final class NearDuplicateIndex {
    public let hasher: MinHasher
    /// Per entry: its shingles (sorted and distinct once `isSet[entry]`).
    private var shingleLists: [[UInt32]] = []
    private var isSet: [Bool] = []
    private var ids: [Int] = []
    /// Per band: band key -> newest entry with that key.
    private var heads: [[UInt64: Int32]]
    /// Per band, per entry: the next-older entry with the same key, or -1.
    private var next: [[Int32]]

    public init(options: NearDuplicateOptions = NearDuplicateOptions()) {
        hasher = MinHasher(options: options)
        heads = Array(repeating: [:], count: options.bands)
        next = Array(repeating: [], count: options.bands)
    }

    /// Entries indexed.
    public var count: Int { shingleLists.count }

    /// A query's result: the best match at or above the threshold, and what `insert` needs.
    public struct Query {
        public let match: (id: Int, jaccard: Double)?
        let keys: [UInt64]
        let shingles: [UInt32]
        let isSet: Bool
    }

    /// The indexed text most similar to `shingles` (from `MinHasher.shingles`) among the LSH
    /// candidates, if its exact Jaccard similarity reaches the threshold.
    public func query(_ shingles: [UInt32]) -> Query {
        guard !shingles.isEmpty else { return Query(match: nil, keys: [], shingles: [], isSet: true) }
        let keys = bandKeys(hasher.signature(shingles))
        var checked = Set<Int32>()
        var best: (id: Int, jaccard: Double)?
        var set: [UInt32]?
        let opts = hasher.options
        outer: for (band, key) in keys.enumerated() {
            var e = heads[band][key] ?? -1
            while e >= 0 {
                if checked.count >= opts.maxCandidates { break outer }
                if checked.insert(e).inserted {
                    if set == nil { set = MinHasher.distinct(shingles) }
                    let entry = Int(e)
                    if !isSet[entry] {
                        shingleLists[entry] = MinHasher.distinct(shingleLists[entry])
                        isSet[entry] = true
                    }
                    let j = MinHasher.jaccard(set!, shingleLists[entry])
                    if j >= opts.threshold && j > (best?.jaccard ?? -1) { best = (ids[entry], j) }
                }
                e = next[band][Int(e)]
            }
        }
        return Query(match: best, keys: keys, shingles: set ?? shingles, isSet: set != nil)
    }

    /// Adds the text of a query under the caller's `id`.
    public func insert(id: Int, _ query: Query) {
        guard !query.shingles.isEmpty else { return }
        let entry = Int32(shingleLists.count)
        shingleLists.append(query.shingles)
        isSet.append(query.isSet)
        ids.append(id)
        for (band, key) in query.keys.enumerated() {
            next[band].append(heads[band][key] ?? -1)
            heads[band][key] = entry
        }
    }

    private func bandKeys(_ signature: [UInt32]) -> [UInt64] {
        let bands = hasher.options.bands
        let rows = signature.count / bands
        var keys = [UInt64]()
        keys.reserveCapacity(bands)
        for b in 0..<bands {
            var h = UInt64(b) &* 0x9E37_79B9_7F4A_7C15
            var r = 0
            while r < rows {
                let lo = UInt64(signature[b * rows + r])
                let hi = r + 1 < rows ? UInt64(signature[b * rows + r + 1]) : 0
                h = ContentHash.mix(h ^ (hi << 32 | lo), 0xE703_7ED1_A0B4_28DB)
                r += 2
            }
            keys.append(h)
        }
        return keys
    }
}

/// Exact and near-duplicate detection over a stream of records: the first of each group is kept.
public final class Deduplicator {
    /// How a record relates to the records kept before it.
    public enum Verdict: Sendable, Equatable {
        case unique
        /// Same content (format, roles and fields) as kept record `of`.
        case exact(of: Int)
        /// Shingle-set Jaccard similarity `jaccard` (>= threshold) with kept record `of`.
        case near(of: Int, jaccard: Double)
    }

    private var exact: [ContentDigest: Int] = [:]
    public let near: NearDuplicateIndex
    /// Whether near-duplicates are looked for (exact ones always are).
    public let findNear: Bool

    public init(options: NearDuplicateOptions = NearDuplicateOptions(), findNear: Bool = true) {
        near = NearDuplicateIndex(options: options)
        self.findNear = findNear
    }

    /// Checks record `id` against the records kept so far and keeps it when unique.
    public func check(id: Int, record: DataRecord) -> Verdict {
        let digest = ContentHash.hash128(record.canonicalBytes)
        if let first = exact[digest] { return .exact(of: first) }
        exact[digest] = id
        guard findNear else { return .unique }
        let query = near.query(near.hasher.shingles(record.contentText))
        if let match = query.match { return .near(of: match.id, jaccard: match.jaccard) }
        near.insert(id: id, query)
        return .unique
    }
}

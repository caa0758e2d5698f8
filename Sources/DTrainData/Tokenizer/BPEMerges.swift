// The BPE merge loop and the two hash tables it runs on: merges keyed by a pair of token ids,
// and whole words keyed by their bytes. Both are open-addressed with linear probing and built
// once at load; lookups never allocate.

import DTrainCore

/// Merge rules keyed by (left id, right id), each giving `rank << 32 | merged id`.
struct PairTable {
    /// The value `lookup` returns for a pair with no rule; above every real rule.
    static let none = UInt64.max
    /// Slot i holds its key at 2i and its value at 2i+1 (one cache line for both).
    private var entries: [UInt64]
    private let shift: UInt64
    private let mask: Int

    init(expectedCount: Int) {
        var capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        entries = [UInt64](repeating: PairTable.none, count: 2 * capacity)
        shift = UInt64(64 - capacity.trailingZeroBitCount)
        mask = capacity - 1
    }

    @inline(__always)
    private static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// Adds the rule; a pair already present keeps its earlier (lower) rank.
    mutating func insert(_ a: Int32, _ b: Int32, rank: Int, merged: Int32) {
        let k = PairTable.key(a, b)
        var i = slot(k)
        while entries[2 * i] != PairTable.none {
            if entries[2 * i] == k { return }
            i = (i + 1) & mask
        }
        entries[2 * i] = k
        entries[2 * i + 1] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
    }

    /// `rank << 32 | merged id` of the rule for (a, b), or `PairTable.none`.
    @inline(__always)
    func lookup(_ a: Int32, _ b: Int32) -> UInt64 {
        let k = PairTable.key(a, b)
        var i = slot(k)
        return entries.withUnsafeBufferPointer { e in
            while true {
                let stored = e[2 * i]
                if stored == k { return e[2 * i + 1] }
                if stored == PairTable.none { return PairTable.none }
                i = (i + 1) & mask
            }
        }
    }
}

/// Token ids keyed by their byte strings, the bytes living in the tokenizer's byte arena.
struct WordTable {
    private var slots: [Int32]
    private var hashes: [UInt64]
    private let mask: Int

    init(expectedCount: Int) {
        var capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        slots = [Int32](repeating: -1, count: capacity)
        hashes = [UInt64](repeating: 0, count: capacity)
        mask = capacity - 1
    }

    /// FNV-1a over the bytes, finished with a multiply so short strings spread over the table.
    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var f = FNV1a()
        for i in 0..<n { f.mix(UInt64(p[i])) }
        let h = f.value
        return (h ^ (h >> 29)) &* 0x9E37_79B9_7F4A_7C15
    }

    /// Adds `id` for the bytes `arena[offsets[id] ..< offsets[id + 1]]`; an equal string already
    /// present keeps its (lower) id.
    mutating func insert(_ id: Int32, arena: UnsafePointer<UInt8>, offsets: UnsafePointer<Int32>) {
        let start = Int(offsets[Int(id)]), n = Int(offsets[Int(id) + 1]) - start
        let h = WordTable.hash(arena + start, n)
        var i = Int(truncatingIfNeeded: h >> 32) & mask
        while slots[i] >= 0 {
            if hashes[i] == h {
                let other = slots[i]
                let os = Int(offsets[Int(other)]), on = Int(offsets[Int(other) + 1]) - os
                if on == n && bytesEqual(arena + os, arena + start, n) { return }
            }
            i = (i + 1) & mask
        }
        slots[i] = id
        hashes[i] = h
    }

    /// The id whose bytes equal `p[0..<n]`, or -1.
    @inline(__always)
    func lookup(_ p: UnsafePointer<UInt8>, _ n: Int,
                arena: UnsafePointer<UInt8>, offsets: UnsafePointer<Int32>) -> Int32 {
        let h = WordTable.hash(p, n)
        var i = Int(truncatingIfNeeded: h >> 32) & mask
        return slots.withUnsafeBufferPointer { slots in
            hashes.withUnsafeBufferPointer { hashes in
                while true {
                    let id = slots[i]
                    if id < 0 { return -1 }
                    if hashes[i] == h {
                        let os = Int(offsets[Int(id)]), on = Int(offsets[Int(id) + 1]) - os
                        if on == n && bytesEqual(arena + os, p, n) { return id }
                    }
                    i = (i + 1) & mask
                }
            }
        }
    }
}

@inline(__always)
private func bytesEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    for i in 0..<n where a[i] != b[i] { return false }
    return true
}

/// Per-call working memory of the merge loop, grown to the longest word seen.
struct MergeScratch {
    private(set) var capacity = 0
    var ids: UnsafeMutablePointer<Int32>
    /// `PairTable.lookup` of each adjacent pair (short words), or heap entries (long words).
    var pairs: UnsafeMutablePointer<UInt64>
    var prev: UnsafeMutablePointer<Int32>
    var next: UnsafeMutablePointer<Int32>

    init() {
        ids = .allocate(capacity: 1); pairs = .allocate(capacity: 1)
        prev = .allocate(capacity: 1); next = .allocate(capacity: 1)
    }

    mutating func reserve(_ n: Int) {
        guard n > capacity else { return }
        release()
        let c = max(n, 2 * capacity, 64)
        ids = .allocate(capacity: c); pairs = .allocate(capacity: 4 * c)
        prev = .allocate(capacity: c); next = .allocate(capacity: c)
        capacity = c
    }

    func release() {
        ids.deallocate(); pairs.deallocate(); prev.deallocate(); next.deallocate()
    }
}

enum BPEMerge {
    /// Words up to this many bytes are merged by rescanning their pairs (quadratic, but no heap).
    static let shortWord = 48

    /// Merges the bytes `p[0..<n]` (n >= 1) and appends the resulting ids to `out`: repeatedly the
    /// adjacent pair with the lowest rank, the leftmost one on ties, as Hugging Face and llama.cpp
    /// do. Bytes with no token (`byteTokens[b] < 0`) are dropped.
    static func merge(_ p: UnsafePointer<UInt8>, _ n: Int, byteTokens: UnsafePointer<Int32>,
                      pairs table: PairTable, scratch: inout MergeScratch, into out: inout [Int32]) {
        scratch.reserve(n)
        let ids = scratch.ids
        for i in 0..<n { ids[i] = byteTokens[Int(p[i])] }
        if n <= shortWord {
            let m = mergeShort(ids, n, table, scratch.pairs)
            for i in 0..<m where ids[i] >= 0 { out.append(ids[i]) }
        } else {
            mergeLong(ids, n, table, scratch)
            var i: Int32 = 0
            while i >= 0 {
                if ids[Int(i)] >= 0 { out.append(ids[Int(i)]) }
                i = scratch.next[Int(i)]
            }
        }
    }

    /// Merges `ids[0..<n]` in place, returning the new count.
    @inline(__always)
    private static func mergeShort(_ ids: UnsafeMutablePointer<Int32>, _ n: Int, _ table: PairTable,
                                   _ pk: UnsafeMutablePointer<UInt64>) -> Int {
        var m = n
        for i in 0..<(m - 1) { pk[i] = table.lookup(ids[i], ids[i + 1]) }
        while m > 1 {
            var best = 0
            var bestValue = pk[0]
            var i = 1
            while i < m - 1 {
                if pk[i] < bestValue { bestValue = pk[i]; best = i }
                i += 1
            }
            if bestValue == PairTable.none { break }
            ids[best] = Int32(truncatingIfNeeded: bestValue & 0xFFFF_FFFF)
            // Drop symbol best+1 and pair best+1 (old numbering); pairs best-1 and best change.
            i = best + 1
            while i < m - 1 { ids[i] = ids[i + 1]; i += 1 }
            i = best + 1
            while i < m - 2 { pk[i] = pk[i + 1]; i += 1 }
            m -= 1
            if best > 0 { pk[best - 1] = table.lookup(ids[best - 1], ids[best]) }
            if best < m - 1 { pk[best] = table.lookup(ids[best], ids[best + 1]) }
        }
        return m
    }

    /// Merges `ids[0..<n]` as a linked list (`scratch.next`, -1 ends it) driven by a min-heap of
    /// `rank << 32 | left position` entries; stale entries are recognised by re-looking the pair up.
    private static func mergeLong(_ ids: UnsafeMutablePointer<Int32>, _ n: Int, _ table: PairTable,
                                  _ scratch: MergeScratch) {
        let prev = scratch.prev, next = scratch.next, heap = scratch.pairs
        var heapCount = 0

        func push(_ v: UInt64) {
            var i = heapCount
            heapCount += 1
            heap[i] = v
            while i > 0 {
                let parent = (i - 1) >> 1
                if heap[parent] <= heap[i] { break }
                let t = heap[parent]; heap[parent] = heap[i]; heap[i] = t
                i = parent
            }
        }
        func pop() -> UInt64 {
            let top = heap[0]
            heapCount -= 1
            heap[0] = heap[heapCount]
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < heapCount && heap[l] < heap[smallest] { smallest = l }
                if r < heapCount && heap[r] < heap[smallest] { smallest = r }
                if smallest == i { break }
                let t = heap[smallest]; heap[smallest] = heap[i]; heap[i] = t
                i = smallest
            }
            return top
        }
        func pushPair(_ left: Int32, _ right: Int32) {
            let v = table.lookup(ids[Int(left)], ids[Int(right)])
            if v != PairTable.none { push(v & 0xFFFF_FFFF_0000_0000 | UInt64(UInt32(left))) }
        }

        for i in 0..<n {
            prev[i] = Int32(i - 1)
            next[i] = i + 1 < n ? Int32(i + 1) : -1
        }
        for i in 0..<(n - 1) { pushPair(Int32(i), Int32(i + 1)) }
        // Each merge pushes at most two entries and removes one symbol: 3n entries suffice.
        while heapCount > 0 {
            let entry = pop()
            let left = Int32(truncatingIfNeeded: entry & 0xFFFF_FFFF)
            let right = next[Int(left)]
            if ids[Int(left)] == Int32.min || right < 0 { continue }
            let v = table.lookup(ids[Int(left)], ids[Int(right)])
            if v == PairTable.none || v >> 32 != entry >> 32 { continue }
            ids[Int(left)] = Int32(truncatingIfNeeded: v & 0xFFFF_FFFF)
            ids[Int(right)] = Int32.min   // removed
            let after = next[Int(right)]
            next[Int(left)] = after
            if after >= 0 { prev[Int(after)] = left }
            if prev[Int(left)] >= 0 { pushPair(prev[Int(left)], left) }
            if after >= 0 { pushPair(left, after) }
        }
    }
}

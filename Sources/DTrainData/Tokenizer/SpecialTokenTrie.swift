/// The special (added) tokens as a byte trie, for finding them verbatim in input text.
struct SpecialTokenTrie {
    /// `startsToken[b]`: some special token begins with byte `b` (the quick rejection test).
    private(set) var startsToken = [Bool](repeating: false, count: 256)
    /// Child node of (node << 8 | byte).
    private var edges: [Int: Int32] = [:]
    /// Token id ending at each node, or -1; node 0 is the root.
    private var terminal: [Int32] = [-1]

    var isEmpty: Bool { terminal.count == 1 }

    /// Adds `bytes` as token `id`; a string already present keeps its first id.
    mutating func insert(_ bytes: [UInt8], id: Int32) {
        guard let head = bytes.first else { return }
        startsToken[Int(head)] = true
        var node = 0
        for b in bytes {
            let key = node << 8 | Int(b)
            if let child = edges[key] {
                node = Int(child)
            } else {
                terminal.append(-1)
                edges[key] = Int32(terminal.count - 1)
                node = terminal.count - 1
            }
        }
        if terminal[node] < 0 { terminal[node] = id }
    }

    /// The longest special token that starts at `p` (within `n` bytes), if any.
    func longestMatch(_ p: UnsafePointer<UInt8>, _ n: Int) -> (id: Int32, length: Int)? {
        var node = 0
        var best: (id: Int32, length: Int)?
        var i = 0
        while i < n, let child = edges[node << 8 | Int(p[i])] {
            node = Int(child)
            i += 1
            if terminal[node] >= 0 { best = (terminal[node], i) }
        }
        return best
    }
}

import DTrainCore
import DTrainData

/// Scores label encodings: for each candidate (a question's record with one label as its
/// answer), Σ −log p over the tokens that carry loss, each predicted from the tokens before it.
///
/// Several questions are scored at a time in one KV cache, and no token runs twice: a group's
/// candidates form a prefix tree (the instruction the questions share, then each question's own
/// prompt, then the labels' common beginnings, such as a year two dates share). The tree is cut
/// into chains, runs of nodes that each have one child; the chains at one depth of the cut tree
/// run together in one pass (more if they exceed `chunk` tokens), each in the cache row of its
/// first leaf, a chain that branches off starting from a copy of its parent's row. A pass over
/// many questions' chains keeps the products large, so streaming the weights through the BLAS
/// once per pass is a small part of it. The positions whose next token carries loss are gathered
/// and go through the LM head together at the end of the group.
final class LabelScorer {
    let model: LlamaModel
    let decoder: KVCacheDecoder
    /// Questions per group, in order: each group's candidates fit the cache's rows.
    let groups: [Range<Int>]
    let headRows: Int
    let gathered: FloatBuffer  // (scored, C) hidden states of the positions that predict a loss token
    let headScratch: FloatBuffer
    let rowLoss: UnsafeMutablePointer<Float>  // (scored)
    let gatheredRows: UnsafeMutablePointer<Int32>  // (scored) 0, 1, 2, …: the head reads `gathered` in order

    /// - Parameters: questions: each question's candidates (token ids and loss masks);
    ///   cacheBytes: the most the KV cache may take (it sets how many questions share a pass);
    ///   chunk: tokens per pass.
    init(model: LlamaModel, questions: [[TokenizedExample]], cacheBytes: Int = 512 << 20, chunk: Int = 1024) {
        self.model = model
        let c = model.config
        let context = max(2, questions.joined().map(\.ids.count).max() ?? 2)
        let bytesPerRow = 2 * c.numLayers * context * c.kvDim * MemoryLayout<Float>.size
        let widest = questions.map(\.count).max() ?? 1
        let rows = max(widest, min(cacheBytes / bytesPerRow, 64 * widest))
        var groups: [Range<Int>] = [], start = 0, used = 0
        for (i, q) in questions.enumerated() {
            if used + q.count > rows { groups.append(start..<i); start = i; used = 0 }
            used += q.count
        }
        if start < questions.count { groups.append(start..<questions.count) }
        self.groups = groups
        // The most positions a group scores: every candidate's loss tokens, before sharing.
        let scored = max(1, groups.map { g in questions[g].joined().reduce(0) { $0 + $1.lossMask.dropFirst().filter { $0 != 0 }.count } }.max() ?? 1)
        decoder = KVCacheDecoder(model: model, rows: max(1, groups.map { questions[$0].joined().count }.max() ?? 1),
                                 context: context, chunk: chunk)
        headRows = min(256, scored)
        gathered = FloatBuffer(count: scored * c.hiddenSize)
        headScratch = FloatBuffer(count: CrossEntropyHead.scratchCount(rowsPerChunk: headRows, C: c.hiddenSize, V: c.vocabSize))
        rowLoss = .allocate(capacity: scored)
        gatheredRows = .allocate(capacity: scored)
        for i in 0..<scored { gatheredRows[i] = Int32(i) }
    }

    deinit { rowLoss.deallocate(); gatheredRows.deallocate() }

    /// Σ −log p over each candidate's loss-carrying tokens, for the questions given at init
    /// (the same list): result[q][l] for question q's candidate l.
    func scores(_ questions: [[TokenizedExample]]) -> [[Double]] {
        var result: [[Double]] = []
        for g in groups {
            let candidates = Array(questions[g].joined())
            let nll = score(candidates)
            var at = 0
            for q in g { result.append(Array(nll[at..<(at + questions[q].count)])); at += questions[q].count }
        }
        return result
    }

    /// The index of each question's candidate with the smallest summed negative log-likelihood
    /// (the first of equals).
    func best(_ questions: [[TokenizedExample]]) -> [Int] {
        scores(questions).map { nll in nll.indices.min { nll[$0] < nll[$1] }! }
    }

    /// One group: Σ −log p per candidate.
    private func score(_ candidates: [TokenizedExample]) -> [Double] {
        let tree = PrefixTree(candidates)
        let c = model.config, C = c.hiddenSize
        decoder.resetAll()
        // Each node's cache row: its first child's, so that a chain continues its parent's row;
        // each leaf its own (children come after their parent in the node list).
        var row = [Int](repeating: 0, count: tree.count), leaves = 0
        for node in stride(from: tree.count - 1, to: 0, by: -1) {
            if let first = tree.children[node].first { row[node] = row[first] } else { row[node] = leaves; leaves += 1 }
        }
        // Positions whose next token carries loss, deduplicated by (node, target): the head's rows.
        var headRow: [Int64: Int] = [:], targets: [Int32] = [], owners: [(row: Int, candidate: Int)] = []
        var tokens: [Int32] = [], nodes: [Int] = [], segments: [KVCacheDecoder.Segment] = []
        tokens.reserveCapacity(decoder.chunk); nodes.reserveCapacity(decoder.chunk)
        func runPass() {
            guard !tokens.isEmpty else { return }
            let hidden = decoder.appendReturningHidden(tokens, segments: segments)
            for (i, node) in nodes.enumerated() {
                for s in tree.scored[node] {
                    let key = Int64(node) << 32 | Int64(UInt32(bitPattern: s.target))
                    let r: Int
                    if let known = headRow[key] { r = known } else {
                        r = targets.count
                        headRow[key] = r
                        targets.append(s.target)
                        (gathered.base + r * C).update(from: hidden + i * C, count: C)
                    }
                    owners.append((r, s.candidate))
                }
            }
            tokens.removeAll(keepingCapacity: true); nodes.removeAll(keepingCapacity: true); segments.removeAll(keepingCapacity: true)
        }
        var level = tree.children[0].map(tree.chain(from:))
        while !level.isEmpty {
            // A chain that is not its parent's first child starts from a copy of the parent's
            // row, which holds exactly the parent's path until this level's passes run.
            for chain in level {
                let parent = tree.parent[chain.first]
                if parent != 0 && row[parent] != row[chain.first] {
                    decoder.copyPrefix(from: row[parent], to: row[chain.first], count: tree.position[parent] + 1)
                }
            }
            for chain in level {
                var node = chain.first, count = 0
                while true {
                    if tokens.count == decoder.chunk {
                        if count > 0 { segments.append(.init(row: row[chain.first], count: count)); count = 0 }
                        runPass()
                    }
                    tokens.append(tree.token[node]); nodes.append(node); count += 1
                    if node == chain.last { break }
                    node = tree.children[node][0]
                }
                segments.append(.init(row: row[chain.first], count: count))
            }
            runPass()
            level = level.flatMap { tree.children[$0.last].map(tree.chain(from:)) }
        }
        var nll = [Double](repeating: 0, count: candidates.count)
        guard !targets.isEmpty else { return nll }
        _ = CrossEntropyHead.forward(nil, nil, rowLoss, gathered.base, model.params.base + model.layout.lmHead, gatheredRows, targets,
                                     targets.count, C, c.vocabSize, lossScale: 0, scratch: headScratch.base, rowsPerChunk: headRows)
        for o in owners { nll[o.candidate] += Double(rowLoss[o.row]) }
        return nll
    }
}

/// The tokens candidates feed the model, as a tree: node 0 is the root (no token); a node is
/// one token at one position after its parent's path. Feeding a node's token yields the
/// prediction of the next one, so `scored[node]` lists the candidates whose next token there
/// carries loss, with that token.
struct PrefixTree {
    private(set) var token: [Int32] = [-1], parent: [Int] = [-1], position: [Int] = [-1]
    private(set) var children: [[Int]] = [[]]
    private(set) var scored: [[(candidate: Int, target: Int32)]] = [[]]
    var count: Int { token.count }

    /// A run of nodes from `first` down to `last` through single children.
    struct Chain { let first: Int, last: Int }

    init(_ candidates: [TokenizedExample]) {
        var child: [Int64: Int] = [:]  // parent << 32 | token → node
        for (ci, e) in candidates.enumerated() {
            var node = 0
            // The last token is never fed: nothing after it is predicted.
            for j in 0..<max(0, e.ids.count - 1) {
                let key = Int64(node) << 32 | Int64(UInt32(bitPattern: e.ids[j]))
                if let next = child[key] { node = next } else {
                    let next = token.count
                    token.append(e.ids[j]); parent.append(node); position.append(j); children.append([]); scored.append([])
                    children[node].append(next)
                    child[key] = next
                    node = next
                }
                if e.lossMask[j + 1] != 0 { scored[node].append((ci, e.ids[j + 1])) }
            }
        }
    }

    func chain(from first: Int) -> Chain {
        var last = first
        while children[last].count == 1 { last = children[last][0] }
        return Chain(first: first, last: last)
    }
}

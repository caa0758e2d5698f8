import DTrainCore
import DTrainDistributed
import Foundation

/// Sums the trainable gradients over all ranks, bucket by bucket, starting each bucket's
/// non-blocking all-reduce as soon as backward has finished the layers it covers, so that
/// communication overlaps the backward of earlier layers.
///
/// Buckets are formed from the last layer down (the order backward finishes them) until each
/// holds at least `bucketFloats`; what no layer owns (embedding, final norm, LM head) forms the
/// last buckets. With full fine-tuning the LM head's gradient is complete once the head's
/// backward has run, before any layer's: it is a bucket of its own, started first (`headDone`).
/// When the embeddings are tied that gradient is also the embedding's, whose lookup part comes
/// only at the end of backward: the model hands those rows over instead (`takeEmbeddingRows`),
/// and they are gathered from every rank and added to the sums in rank order, a few megabytes
/// where the dense matrix is a hundred (SmolLM2). Every rank starts the same buckets in the same
/// order, as MPI requires. The reduction is out of place, into `reduced`, which the optimizer
/// then reads.
///
/// MPI moves a started reduction only inside MPI calls, and backward makes none for the
/// length of a layer. The main thread tests the started buckets as each layer ends, which moves
/// small buckets and those in shared memory; with `progressThread` (buckets of megabytes
/// crossing a network) a thread tests them every half millisecond until `finish`, one lock
/// keeping the two threads' MPI calls apart. Within one node the thread only costs compute time
/// (README, "Data parallelism").
public final class GradientReducer {
    public struct Bucket {
        let range: Range<Int>
        /// The layer whose backward completes the bucket; nil for the head's and the rest.
        let lastLayer: Int?
        var isHead = false
    }

    /// The tied embedding's lookup rows of a step's last micro-batch, reduced apart from the
    /// dense gradient: this rank's (rows, C) and tokens, and every rank's after the gather.
    public final class EmbeddingRows {
        let embedding: Int, C: Int, rows: Int
        let send: FloatBuffer, tokens: UnsafeMutablePointer<Int32>
        let gathered: FloatBuffer, gatheredTokens: UnsafeMutablePointer<Int32>
        var taken = false

        /// `embedding`: the embedding's offset in the gradients; `rows`: a micro-batch's tokens.
        public init(embedding: Int, C: Int, rows: Int, worldSize: Int) {
            self.embedding = embedding; self.C = C; self.rows = rows
            send = FloatBuffer(count: rows * C)
            tokens = .allocate(capacity: rows)
            gathered = FloatBuffer(count: worldSize * rows * C)
            gatheredTokens = .allocate(capacity: worldSize * rows)
        }

        deinit { tokens.deallocate(); gatheredTokens.deallocate() }
    }

    public let comm: Communicator
    public let grads: FloatBuffer
    /// The summed gradients (same layout as `grads`).
    public let reduced: FloatBuffer
    public let buckets: [Bucket]
    private var started = 0
    /// The started reductions, shared with the progress thread under its lock.
    private let poller: Poller
    private var backwardEnd = 0.0, waitEnd = 0.0
    /// Seconds spent waiting for reductions after this rank's backward had finished: the
    /// communication not hidden, plus waiting for slower ranks.
    public private(set) var exposedSeconds = 0.0
    /// Of those, the seconds the reductions ran on after the slowest rank's backward had finished:
    /// the communication not hidden behind backward.
    public private(set) var unhiddenSeconds = 0.0
    /// Bytes of gradient each rank contributes per step.
    public var payloadBytes: Int { grads.count * MemoryLayout<Float>.stride }

    /// Whether a thread tests the started reductions while backward runs.
    public let progressThread: Bool
    /// Where the tied embedding's lookup rows go (nil: they are in the dense gradient).
    public let embeddingRows: EmbeddingRows?
    /// For the run line: how the LM head's gradient is reduced.
    public var headNote: String {
        guard buckets.first?.isHead == true else { return "" }
        return embeddingRows == nil ? "; the LM head's gradient from its backward on"
            : "; the LM head's gradient from its backward on, the tied embedding's lookup rows gathered"
    }

    /// `layerRanges[l]` is the span of layer l's gradients inside `grads`. `spansHosts`: the
    /// ranks are on more than one host; then buckets over a megabyte get the progress thread
    /// (when the communicator allows a second thread).
    /// `headRange`: the LM head's gradient span when it is trained (full fine-tuning);
    /// `embeddingRows`: when that span is also the embedding's (tied), where its lookup rows go.
    public init(comm: Communicator, grads: FloatBuffer, layerRanges: [Range<Int>], headRange: Range<Int>? = nil,
                embeddingRows: EmbeddingRows? = nil, bucketFloats: Int = 1 << 22, spansHosts: Bool = false) {
        self.comm = comm
        self.grads = grads
        self.embeddingRows = embeddingRows
        reduced = FloatBuffer(count: grads.count)
        var buckets: [Bucket] = headRange.map { [Bucket(range: $0, lastLayer: nil, isHead: true)] } ?? []
        var pending: Range<Int>? = nil
        for l in stride(from: layerRanges.count - 1, through: 0, by: -1) {
            let r = layerRanges[l]
            pending = pending.map { min($0.lowerBound, r.lowerBound)..<max($0.upperBound, r.upperBound) } ?? r
            if pending!.count >= bucketFloats || l == 0 {
                buckets.append(Bucket(range: pending!, lastLayer: l))
                pending = nil
            }
        }
        // Everything outside the layers and the head, in up to four pieces.
        let covered = layerRanges.isEmpty ? 0..<0 : layerRanges.map(\.lowerBound).min()!..<layerRanges.map(\.upperBound).max()!
        var rest: [Range<Int>] = []
        if covered.upperBound < grads.count { rest.append(covered.upperBound..<grads.count) }
        if covered.lowerBound > 0 { rest.append(0..<covered.lowerBound) }
        for piece in rest {
            guard let head = headRange, head.overlaps(piece) else { buckets.append(Bucket(range: piece, lastLayer: nil)); continue }
            if piece.lowerBound < head.lowerBound { buckets.append(Bucket(range: piece.lowerBound..<head.lowerBound, lastLayer: nil)) }
            if head.upperBound < piece.upperBound { buckets.append(Bucket(range: head.upperBound..<piece.upperBound, lastLayer: nil)) }
        }
        self.buckets = buckets
        poller = Poller(comm: comm, buckets: buckets.count)
        progressThread = spansHosts && comm.allowsProgressThread && buckets.contains { $0.range.count > 1 << 18 }
        if self.progressThread {
            let thread = Thread { [poller] in poller.run() }
            thread.name = "dtrain all-reduce progress"
            thread.start()
        }
    }

    deinit { poller.stop() }

    /// Call before the last micro-batch's backward of a step.
    public func beginStep() {
        started = 0
        poller.reset()
    }

    /// The head's backward has run: start its bucket.
    public func headDone() {
        if started < buckets.count && buckets[started].isHead { start(started) }
    }

    /// The model's lookup rows (N ≤ the micro-batch's tokens; `LlamaModel.embeddingGradientRows`).
    public func takeEmbeddingRows(_ rows: UnsafePointer<Float>, _ tokens: UnsafePointer<Int32>, _ N: Int) {
        guard let e = embeddingRows else { preconditionFailure("GradientReducer: no embedding rows expected") }
        precondition(N <= e.rows, "GradientReducer: \(N) embedding rows; room for \(e.rows)")
        e.send.base.update(from: rows, count: N * e.C)
        (e.send.base + N * e.C).update(repeating: 0, count: (e.rows - N) * e.C)
        e.tokens.update(from: tokens, count: N)
        (e.tokens + N).update(repeating: 0, count: e.rows - N)
        e.taken = true
    }

    /// Backward has finished layer l: start every bucket that is now complete (and, without a
    /// progress thread, nudge the others).
    public func layerDone(_ l: Int) {
        headDone()
        while started < buckets.count, let last = buckets[started].lastLayer, last >= l {
            start(started)
        }
        if !progressThread { poller.testStarted() }
    }

    /// Starts what is left, waits for everything; `reduced` then holds the sums.
    public func finish() {
        let t0 = now()
        backwardEnd = Date().timeIntervalSince1970
        while started < buckets.count { start(started) }
        // The progress thread is idle from here until the next step's first bucket.
        for h in poller.pause() { comm.wait(h) }
        if let e = embeddingRows {
            // A rank dealt no examples this step ran no micro-batch: it sends zero rows, since
            // the gather needs every rank.
            if !e.taken {
                e.send.base.update(repeating: 0, count: e.rows * e.C)
                e.tokens.update(repeating: 0, count: e.rows)
            }
            e.taken = false
            comm.allGather(send: e.send.base, count: e.rows * e.C, into: e.gathered.base)
            comm.allGather(send: e.tokens, count: e.rows, into: e.gatheredTokens)
            // Rank by rank, row by row: the same order, so the same sums, on every rank.
            let vec = Vectors.kernels
            for i in 0..<(comm.worldSize * e.rows) {
                vec.add(reduced.pointer(at: e.embedding + Int(e.gatheredTokens[i]) * e.C), e.gathered.base + i * e.C, e.C)
            }
        }
        waitEnd = Date().timeIntervalSince1970
        exposedSeconds += now() - t0
    }

    /// After `finish`: when this rank's backward ended (wall clock), in slot `rank` of an array
    /// of `worldSize` zeros. The trainer sums it with the step's other numbers in the one
    /// all-reduce it does anyway, which hands every rank all ranks' times: the slowest is the
    /// largest. (Wall clocks: equal on one node, NTP-close across nodes.)
    public var backwardEndSlots: [Double] {
        var slots = [Double](repeating: 0, count: comm.worldSize)
        slots[comm.rank] = backwardEnd
        return slots
    }

    /// Takes every rank's backward end (`backwardEndSlots` summed over the ranks) and counts the
    /// time this rank's reductions ran on after the slowest rank's backward had finished.
    public func recordBackwardEnds(_ ends: ArraySlice<Double>) {
        unhiddenSeconds += max(0, waitEnd - (ends.max() ?? waitEnd))
    }

    private func start(_ i: Int) {
        let r = buckets[i].range
        poller.start(i) { comm.startAllReduceSum(send: grads.pointer(at: r.lowerBound), recv: reduced.pointer(at: r.lowerBound), count: r.count) }
        started = i + 1
    }

    /// The started reductions of a step and the thread that tests them. Every MPI call made while
    /// a step's reductions are in flight goes through `gate`.
    final class Poller: @unchecked Sendable {
        private let comm: Communicator
        private let gate = NSCondition()
        private var handles: [ReduceHandle?]
        private var polling = false, stopped = false

        init(comm: Communicator, buckets: Int) {
            self.comm = comm
            handles = Array(repeating: nil, count: buckets)
        }

        func reset() {
            gate.lock(); defer { gate.unlock() }
            for i in handles.indices { handles[i] = nil }
        }

        /// Starts bucket i's reduction (`begin` makes the MPI call) and wakes the thread.
        func start(_ i: Int, _ begin: () -> ReduceHandle) {
            gate.lock(); defer { gate.unlock() }
            handles[i] = begin()
            polling = true
            gate.signal()
        }

        /// Tests every started, unfinished reduction once.
        func testStarted() {
            gate.lock(); defer { gate.unlock() }
            for h in handles { if let h, !h.done { comm.test(h) } }
        }

        /// Stops the testing and hands back the step's handles (the caller waits on them).
        func pause() -> [ReduceHandle] {
            gate.lock(); defer { gate.unlock() }
            polling = false
            return handles.compactMap { $0 }
        }

        func stop() {
            gate.lock(); defer { gate.unlock() }
            stopped = true
            gate.signal()
        }

        /// The progress thread: while a step's reductions are in flight, test them every half
        /// millisecond, releasing the lock in between so that the main thread can start more.
        func run() {
            gate.lock()
            while !stopped {
                guard polling else { gate.wait(); continue }
                for h in handles { if let h, !h.done { comm.test(h) } }
                gate.unlock()
                usleep(500)
                gate.lock()
            }
            gate.unlock()
        }
    }

    /// The span of each layer's trainable gradients for a model's method.
    public static func layerRanges(model: LlamaModel) -> [Range<Int>] {
        model.lora?.layerRanges ?? model.layout.layerRanges
    }
}

import DTrainCore
import DTrainDistributed
import Foundation

/// Sums the trainable gradients over all ranks, bucket by bucket, starting each bucket's
/// non-blocking all-reduce as soon as backward has finished the layers it covers, so that
/// communication overlaps the backward of earlier layers.
///
/// Buckets are formed from the last layer down (the order backward finishes them) until each
/// holds at least `bucketFloats`; what no layer owns (embedding, final norm, LM head) forms the
/// last buckets. Every rank starts the same buckets in the same order, as MPI requires. The
/// reduction is out of place, into `reduced`, which the optimizer then reads.
///
/// MPI moves a started reduction only inside MPI calls, and backward makes none for the
/// length of a layer. The main thread tests the started buckets as each layer ends, which moves
/// small buckets and those in shared memory; with `progressThread` (buckets of megabytes
/// crossing a network) a thread tests them every half millisecond until `finish`, one lock
/// keeping the two threads' MPI calls apart. Within one node the thread only costs compute time
/// (README, "Data parallelism").
public final class GradientReducer {
    public struct Bucket { let range: Range<Int>; let lastLayer: Int? }

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

    /// `layerRanges[l]` is the span of layer l's gradients inside `grads`. `spansHosts`: the
    /// ranks are on more than one host; then buckets over a megabyte get the progress thread
    /// (when the communicator allows a second thread).
    public init(comm: Communicator, grads: FloatBuffer, layerRanges: [Range<Int>], bucketFloats: Int = 1 << 22,
                spansHosts: Bool = false) {
        self.comm = comm
        self.grads = grads
        reduced = FloatBuffer(count: grads.count)
        var buckets: [Bucket] = []
        var pending: Range<Int>? = nil
        for l in stride(from: layerRanges.count - 1, through: 0, by: -1) {
            let r = layerRanges[l]
            pending = pending.map { min($0.lowerBound, r.lowerBound)..<max($0.upperBound, r.upperBound) } ?? r
            if pending!.count >= bucketFloats || l == 0 {
                buckets.append(Bucket(range: pending!, lastLayer: l))
                pending = nil
            }
        }
        // Everything outside the layers, in up to two pieces.
        let covered = layerRanges.isEmpty ? 0..<0 : layerRanges.map(\.lowerBound).min()!..<layerRanges.map(\.upperBound).max()!
        if covered.upperBound < grads.count { buckets.append(Bucket(range: covered.upperBound..<grads.count, lastLayer: nil)) }
        if covered.lowerBound > 0 { buckets.append(Bucket(range: 0..<covered.lowerBound, lastLayer: nil)) }
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

    /// Backward has finished layer l: start every bucket that is now complete (and, without a
    /// progress thread, nudge the others).
    public func layerDone(_ l: Int) {
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

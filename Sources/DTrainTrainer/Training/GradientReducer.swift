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
public final class GradientReducer {
    public struct Bucket { let range: Range<Int>; let lastLayer: Int? }

    public let comm: Communicator
    public let grads: FloatBuffer
    /// The summed gradients (same layout as `grads`).
    public let reduced: FloatBuffer
    public let buckets: [Bucket]
    private var handles: [ReduceHandle?]
    private var started = 0
    private var backwardEnd = 0.0, waitEnd = 0.0
    /// Seconds spent waiting for reductions after this rank's backward had finished: the
    /// communication not hidden, plus waiting for slower ranks.
    public private(set) var exposedSeconds = 0.0
    /// Of those, the seconds the reductions ran on after the slowest rank's backward had finished:
    /// the communication not hidden behind backward.
    public private(set) var unhiddenSeconds = 0.0
    /// Bytes of gradient each rank contributes per step.
    public var payloadBytes: Int { grads.count * MemoryLayout<Float>.stride }

    /// `layerRanges[l]` is the span of layer l's gradients inside `grads`.
    public init(comm: Communicator, grads: FloatBuffer, layerRanges: [Range<Int>], bucketFloats: Int = 1 << 22) {
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
        handles = Array(repeating: nil, count: buckets.count)
    }

    /// Call before the last micro-batch's backward of a step.
    public func beginStep() {
        started = 0
        handles = Array(repeating: nil, count: buckets.count)
    }

    /// Backward has finished layer l: start every bucket that is now complete, nudge the others.
    public func layerDone(_ l: Int) {
        while started < buckets.count, let last = buckets[started].lastLayer, last >= l {
            start(started)
        }
        for h in handles where h != nil { comm.test(h!) }
    }

    /// Starts what is left, waits for everything; `reduced` then holds the sums.
    public func finish() {
        let t0 = now()
        backwardEnd = Date().timeIntervalSince1970
        while started < buckets.count { start(started) }
        for h in handles { if let h { comm.wait(h) } }
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
        handles[i] = comm.startAllReduceSum(send: grads.pointer(at: r.lowerBound), recv: reduced.pointer(at: r.lowerBound), count: r.count)
        started = i + 1
    }

    /// The span of each layer's trainable gradients for a model's method.
    public static func layerRanges(model: LlamaModel) -> [Range<Int>] {
        model.lora?.layerRanges ?? model.layout.layerRanges
    }
}

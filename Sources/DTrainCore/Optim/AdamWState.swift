/// AdamW's moments for one flat trainable range, and the number of steps taken.
public final class AdamWState {
    /// First moment, same layout as the trainable parameters.
    public let m: FloatBuffer
    /// Second moment.
    public let v: FloatBuffer
    /// Steps taken so far (the next step is `step + 1`).
    public var step = 0

    public init(count: Int) {
        m = FloatBuffer(count: count)
        v = FloatBuffer(count: count)
    }

    /// Applies one update to `params` from `grads` with learning rate `lr`.
    public func update(params: FloatBuffer, grads: FloatBuffer, lr: Float, hyper: AdamWHyper) {
        precondition(params.count == m.count && grads.count == m.count, "AdamWState: buffer sizes differ")
        step += 1
        AdamW.step(params.base, m.base, v.base, grads.base, m.count, lr: lr, hyper: hyper, t: step)
    }
}

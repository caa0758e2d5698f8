/// One flat, 64-byte-aligned allocation of `Float`s, owned for its lifetime.
///
/// Parameters, gradients, optimizer moments and activations each live in one `FloatBuffer`, with
/// named views (offsets) into it, so the optimizer, the all-reduce and the checkpoint each act on
/// one contiguous range. The memory is zero-filled at allocation: that first touch is the only
/// page-fault cost a buffer ever pays, so buffers are allocated once and reused.
public final class FloatBuffer: @unchecked Sendable {
    /// Start of the allocation.
    public let base: UnsafeMutablePointer<Float>
    /// Number of floats.
    public let count: Int

    /// Allocates `count` floats, zero-filled.
    public init(count: Int) {
        precondition(count >= 0, "FloatBuffer: negative size \(count)")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride,
                                                   alignment: 64)
        base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        base.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { UnsafeMutableRawPointer(base).deallocate() }

    /// Pointer to the float at `offset`.
    @inline(__always) public func pointer(at offset: Int) -> UnsafeMutablePointer<Float> {
        base + offset
    }

    /// Sets every float to zero.
    public func zero() { base.update(repeating: 0, count: count) }

    /// The contents as an array (for tests and small tensors; never on the hot path).
    public func toArray() -> [Float] { Array(UnsafeBufferPointer(start: base, count: count)) }
}

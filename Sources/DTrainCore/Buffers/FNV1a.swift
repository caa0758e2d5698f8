/// 64-bit FNV-1a, fed one value at a time: the one hash behind the model and data fingerprints
/// in checkpoints, the validation split and the tokenizer's merge table. Checkpoints store its
/// values, so its arithmetic must never change.
public struct FNV1a {
    /// The hash of everything mixed in so far.
    public private(set) var value: UInt64

    /// FNV's offset basis, xor-ed with `basis` (0 for plain FNV-1a).
    @inline(__always)
    public init(basis: UInt64 = 0) { value = 0xCBF2_9CE4_8422_2325 ^ basis }

    /// Mixes in one value (a byte, an id, a word).
    @inline(__always)
    public mutating func mix(_ v: UInt64) { value = (value ^ v) &* 0x100_0000_01B3 }
}

// ggml tensor element types and their conversion to float32.
//
// Every decoder here reproduces ggml's reference `dequantize_row_*` arithmetic operation for
// operation (same products, same order, no fused multiply-add), so the floats it produces are
// bit-identical to ggml's and to gguf-py's NumPy decoders that transformers uses.
import Foundation

/// A ggml tensor element type, as stored in a GGUF tensor info (`ggml_type`).
///
/// Every id ggml has assigned (up to MXFP4 = 39) is listed so the reader can size any tensor;
/// `canDequantize` says which of them dtrain can turn into float32.
public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0, f16 = 1
    case q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22
    case iq4_xs = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28
    case iq1_m = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35, mxfp4 = 39

    /// Elements per block (1 for plain scalar types, 32 for the legacy quants, 256 for K-quants).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .i8, .i16, .i32, .i64, .f64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_nl, .mxfp4: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq2_xxs, .iq2_xs, .iq3_xxs, .iq1_s, .iq3_s,
             .iq2_s, .iq4_xs, .iq1_m, .tq1_0, .tq2_0: return 256
        }
    }

    /// Bytes per block (ggml's `type_size`).
    public var typeSize: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .i8: return 1
        case .i16: return 2
        case .i32: return 4
        case .i64, .f64: return 8
        case .q4_0: return 18     // f16 d, 16 bytes of nibbles
        case .q4_1: return 20     // f16 d, f16 m, 16 bytes of nibbles
        case .q5_0: return 22     // f16 d, u32 high bits, 16 bytes of nibbles
        case .q5_1: return 24     // f16 d, f16 m, u32 high bits, 16 bytes of nibbles
        case .q8_0: return 34     // f16 d, 32 int8
        case .q8_1: return 36     // f16 d, f16 s, 32 int8
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144    // f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
        case .q5_K: return 176    // as q4_K plus 32 bytes of high bits
        case .q6_K: return 210    // 128 low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, f16 d
        case .q8_K: return 292
        case .iq2_xxs: return 66
        case .iq2_xs: return 74
        case .iq3_xxs: return 98
        case .iq1_s: return 50
        case .iq4_nl: return 18
        case .iq3_s: return 110
        case .iq2_s: return 82
        case .iq4_xs: return 136
        case .iq1_m: return 56
        case .tq1_0: return 54
        case .tq2_0: return 66
        case .mxfp4: return 17
        }
    }

    /// ggml's name for the type (`q4_K`, `bf16`, ...).
    public var name: String {
        switch self {
        case .f32: return "f32"
        case .f16: return "f16"
        case .q4_0: return "q4_0"
        case .q4_1: return "q4_1"
        case .q5_0: return "q5_0"
        case .q5_1: return "q5_1"
        case .q8_0: return "q8_0"
        case .q8_1: return "q8_1"
        case .q2_K: return "q2_K"
        case .q3_K: return "q3_K"
        case .q4_K: return "q4_K"
        case .q5_K: return "q5_K"
        case .q6_K: return "q6_K"
        case .q8_K: return "q8_K"
        case .iq2_xxs: return "iq2_xxs"
        case .iq2_xs: return "iq2_xs"
        case .iq3_xxs: return "iq3_xxs"
        case .iq1_s: return "iq1_s"
        case .iq4_nl: return "iq4_nl"
        case .iq3_s: return "iq3_s"
        case .iq2_s: return "iq2_s"
        case .iq4_xs: return "iq4_xs"
        case .i8: return "i8"
        case .i16: return "i16"
        case .i32: return "i32"
        case .i64: return "i64"
        case .f64: return "f64"
        case .iq1_m: return "iq1_m"
        case .bf16: return "bf16"
        case .tq1_0: return "tq1_0"
        case .tq2_0: return "tq2_0"
        case .mxfp4: return "mxfp4"
        }
    }

    public var description: String { "\(name) (type id \(rawValue))" }

    /// Whether `GGMLQuant` can convert this type to float32.
    public var canDequantize: Bool {
        switch self {
        case .f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K: return true
        default: return false
        }
    }

    /// The types `GGMLQuant` converts, for error hints.
    public static var dequantizable: [GGMLType] { allCases.filter(\.canDequantize) }
}

/// Holder of the 65536-entry IEEE half -> float table (256 KiB, built once on first use).
final class HalfFloatTable: @unchecked Sendable {
    /// `values[bits]` is the float32 value of the half with those bits.
    let values: UnsafeMutablePointer<Float>

    init() {
        values = .allocate(capacity: 1 << 16)
        for bits in 0..<(1 << 16) { values[bits] = GGMLQuant.halfToFloat(UInt16(bits)) }
    }

    static let shared = HalfFloatTable()
}

/// Conversion of ggml blocks to float32: plain loops over raw pointers, no allocation.
public enum GGMLQuant {
    /// Tensors with at least this many elements are split across `threads` threads.
    static let parallelThreshold = 1 << 16
    /// Threads used for one large tensor.
    static let threads = 2

    /// The float32 value of an IEEE 754 binary16 bit pattern (exact; NaN payloads are kept).
    public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32(h >> 10) & 0x1F
        let mantissa = UInt32(h & 0x3FF)
        if exponent == 0 {
            // Zero or subnormal: mantissa * 2^-24, exact in float32.
            let magnitude = Float(mantissa) * 0x1p-24
            return sign != 0 ? -magnitude : magnitude
        }
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }

    /// The float32 value of a bfloat16 bit pattern.
    @inline(__always) public static func bf16ToFloat(_ b: UInt16) -> Float {
        Float(bitPattern: UInt32(b) << 16)
    }

    /// Converts `count` elements of `type` at `src` to float32 at `dst`.
    ///
    /// Preconditions (the caller checks them and reports errors with names): `type.canDequantize`,
    /// `count` a multiple of `type.blockSize`, `src` holding `count / blockSize * typeSize` bytes.
    /// Large tensors are split at block boundaries across two threads.
    public static func dequantize(_ type: GGMLType, from src: UnsafeRawPointer,
                                  to dst: UnsafeMutablePointer<Float>, count: Int) {
        precondition(type.canDequantize, "GGMLQuant: \(type) cannot be dequantized")
        precondition(count % type.blockSize == 0, "GGMLQuant: \(count) is not a multiple of \(type.blockSize)")
        let blocks = count / type.blockSize
        guard count >= parallelThreshold, threads > 1, blocks >= threads else {
            dequantizeBlocks(type, src, dst, blocks)
            return
        }
        let perPart = (blocks + threads - 1) / threads
        DispatchQueue.concurrentPerform(iterations: threads) { part in
            let first = part * perPart
            let n = min(perPart, blocks - first)
            if n > 0 {
                dequantizeBlocks(type, src + first * type.typeSize, dst + first * type.blockSize, n)
            }
        }
    }

    /// Single-threaded conversion of `blocks` whole blocks.
    static func dequantizeBlocks(_ type: GGMLType, _ src: UnsafeRawPointer,
                                 _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
        let p = src.assumingMemoryBound(to: UInt8.self)
        let half = UnsafePointer(HalfFloatTable.shared.values)
        switch type {
        case .f32: memcpy(dst, src, blocks * 4)
        case .f16: f16(p, dst, blocks, half)
        case .bf16: bf16(p, dst, blocks)
        case .q8_0: q8_0(p, dst, blocks, half)
        case .q4_0: q4_0(p, dst, blocks, half)
        case .q4_1: q4_1(p, dst, blocks, half)
        case .q5_0: q5_0(p, dst, blocks, half)
        case .q5_1: q5_1(p, dst, blocks, half)
        case .q4_K: q4_K(p, dst, blocks, half)
        case .q5_K: q5_K(p, dst, blocks, half)
        case .q6_K: q6_K(p, dst, blocks, half)
        default: preconditionFailure("GGMLQuant: \(type) cannot be dequantized")
        }
    }

    // MARK: - Byte helpers (little-endian, unaligned).

    @inline(__always) static func u16(_ p: UnsafePointer<UInt8>) -> Int {
        Int(p[0]) | (Int(p[1]) << 8)
    }

    @inline(__always) static func u32(_ p: UnsafePointer<UInt8>) -> UInt32 {
        UInt32(p[0]) | (UInt32(p[1]) << 8) | (UInt32(p[2]) << 16) | (UInt32(p[3]) << 24)
    }

    // MARK: - Scalar types.

    /// F16: one half per element.
    static func f16(_ src: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>, _ n: Int,
                    _ half: UnsafePointer<Float>) {
        for i in 0..<n { y[i] = half[u16(src + 2 * i)] }
    }

    /// BF16: the top 16 bits of a float32.
    static func bf16(_ src: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n { y[i] = Float(bitPattern: UInt32(u16(src + 2 * i)) << 16) }
    }

    // MARK: - 32-element blocks.

    /// Q8_0 block (34 bytes): f16 d, int8 q[32]; y = q*d.
    static func q8_0(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                     _ half: UnsafePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 34, y = dst + b * 32
            let d = half[u16(p)]
            let q = UnsafeRawPointer(p + 2).assumingMemoryBound(to: Int8.self)
            for j in 0..<32 { y[j] = Float(q[j]) * d }
        }
    }

    /// Q4_0 block (18 bytes): f16 d, 16 bytes whose low nibbles are elements 0..15 and high
    /// nibbles 16..31; y = (q-8)*d.
    static func q4_0(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                     _ half: UnsafePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 18, y = dst + b * 32
            let d = half[u16(p)]
            let q = p + 2
            for j in 0..<16 {
                let v = Int32(q[j])
                y[j] = Float((v & 0xF) - 8) * d
                y[j + 16] = Float((v >> 4) - 8) * d
            }
        }
    }

    /// Q4_1 block (20 bytes): f16 d, f16 m, 16 bytes of nibbles (as Q4_0); y = q*d + m.
    static func q4_1(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                     _ half: UnsafePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 20, y = dst + b * 32
            let d = half[u16(p)], m = half[u16(p + 2)]
            let q = p + 4
            for j in 0..<16 {
                let v = Int32(q[j])
                y[j] = Float(v & 0xF) * d + m
                y[j + 16] = Float(v >> 4) * d + m
            }
        }
    }

    /// Q5_0 block (22 bytes): f16 d, u32 whose bit e is the fifth bit of element e, 16 bytes of
    /// nibbles (as Q4_0); y = (q-16)*d.
    static func q5_0(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                     _ half: UnsafePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 22, y = dst + b * 32
            let d = half[u16(p)]
            let qh = u32(p + 2)
            let q = p + 6
            for j in 0..<16 {
                let v = Int32(q[j])
                let h0 = Int32(truncatingIfNeeded: (qh >> UInt32(j)) << 4) & 0x10
                let h1 = Int32(truncatingIfNeeded: qh >> UInt32(j + 12)) & 0x10
                y[j] = Float(((v & 0xF) | h0) - 16) * d
                y[j + 16] = Float(((v >> 4) | h1) - 16) * d
            }
        }
    }

    /// Q5_1 block (24 bytes): f16 d, f16 m, u32 fifth bits, 16 bytes of nibbles; y = q*d + m.
    static func q5_1(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                     _ half: UnsafePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 24, y = dst + b * 32
            let d = half[u16(p)], m = half[u16(p + 2)]
            let qh = u32(p + 4)
            let q = p + 8
            for j in 0..<16 {
                let v = Int32(q[j])
                let h0 = Int32(truncatingIfNeeded: (qh >> UInt32(j)) << 4) & 0x10
                let h1 = Int32(truncatingIfNeeded: qh >> UInt32(j + 12)) & 0x10
                y[j] = Float((v & 0xF) | h0) * d + m
                y[j + 16] = Float((v >> 4) | h1) * d + m
            }
        }
    }

    // MARK: - 256-element K-quant super-blocks.

    /// The 6-bit scale and min of sub-block `j` (0..<8) packed in the 12 scale bytes of a
    /// Q4_K / Q5_K super-block: sub-blocks 0-3 use the low 6 bits of bytes 0-7; 4-7 take their low
    /// 4 bits from bytes 8-11 and their top 2 bits from the spare top bits of bytes 0-7.
    @inline(__always) static func scaleMin(_ j: Int, _ s: UnsafePointer<UInt8>) -> (Float, Float) {
        if j < 4 {
            return (Float(s[j] & 63), Float(s[j + 4] & 63))
        }
        let sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4)
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4)
        return (Float(sc), Float(m))
    }

    /// Q4_K super-block (144 bytes): f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles.
    /// Each 64-element group g uses bytes 32g..<32g+32: low nibbles are sub-block 2g, high
    /// nibbles sub-block 2g+1; y = (d*sc)*q - dmin*m.
    static func q4_K(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                     _ half: UnsafePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 144
            let d = half[u16(p)], dmin = half[u16(p + 2)]
            let scales = p + 4
            for g in 0..<4 {
                let q = p + 16 + 32 * g, y = dst + b * 256 + 64 * g
                let (sc1, m1) = scaleMin(2 * g, scales)
                let (sc2, m2) = scaleMin(2 * g + 1, scales)
                let d1 = d * sc1, min1 = dmin * m1
                let d2 = d * sc2, min2 = dmin * m2
                for l in 0..<32 { y[l] = d1 * Float(q[l] & 0xF) - min1 }
                for l in 0..<32 { y[l + 32] = d2 * Float(q[l] >> 4) - min2 }
            }
        }
    }

    /// Q5_K super-block (176 bytes): f16 d, f16 dmin, 12 scale bytes, 32 bytes of fifth bits
    /// (bit s of byte l belongs to element l of sub-block s), 128 bytes of nibbles laid out as
    /// Q4_K; y = (d*sc)*q - dmin*m.
    static func q5_K(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                     _ half: UnsafePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 176
            let d = half[u16(p)], dmin = half[u16(p + 2)]
            let scales = p + 4, qh = p + 16
            for g in 0..<4 {
                let ql = p + 48 + 32 * g, y = dst + b * 256 + 64 * g
                let (sc1, m1) = scaleMin(2 * g, scales)
                let (sc2, m2) = scaleMin(2 * g + 1, scales)
                let d1 = d * sc1, min1 = dmin * m1
                let d2 = d * sc2, min2 = dmin * m2
                let shift1 = UInt8(2 * g), shift2 = UInt8(2 * g + 1)
                for l in 0..<32 {
                    let hi = Int32((qh[l] >> shift1) & 1) << 4
                    y[l] = d1 * Float(Int32(ql[l] & 0xF) + hi) - min1
                }
                for l in 0..<32 {
                    let hi = Int32((qh[l] >> shift2) & 1) << 4
                    y[l + 32] = d2 * Float(Int32(ql[l] >> 4) + hi) - min2
                }
            }
        }
    }

    /// Q6_K super-block (210 bytes): 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8
    /// scales (one per 16 elements), f16 d. Each 128-element half n uses ql[64n..<64n+64] and
    /// qh[32n..<32n+32]; its quarter k (32 elements) takes nibble k/2 of ql[l + 32*(k%2)] and bits
    /// 2k..2k+1 of qh[l]; y = (d*sc)*(q-32).
    static func q6_K(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                     _ half: UnsafePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 210
            let d = half[u16(p + 208)]
            let sc = UnsafeRawPointer(p + 192).assumingMemoryBound(to: Int8.self)
            for n in 0..<2 {
                let ql = p + 64 * n, qh = p + 128 + 32 * n, s = sc + 8 * n
                let y = dst + b * 256 + 128 * n
                for h in 0..<2 {  // elements l in 16h..<16h+16 share scale index h (+2k)
                    let ds0 = d * Float(s[h]), ds1 = d * Float(s[h + 2])
                    let ds2 = d * Float(s[h + 4]), ds3 = d * Float(s[h + 6])
                    for l in (16 * h)..<(16 * h + 16) {
                        let lo = Int32(ql[l]), lo32 = Int32(ql[l + 32]), hb = Int32(qh[l])
                        let q1 = ((lo & 0xF) | ((hb & 3) << 4)) - 32
                        let q2 = ((lo32 & 0xF) | (((hb >> 2) & 3) << 4)) - 32
                        let q3 = ((lo >> 4) | (((hb >> 4) & 3) << 4)) - 32
                        let q4 = ((lo32 >> 4) | (((hb >> 6) & 3) << 4)) - 32
                        y[l] = ds0 * Float(q1)
                        y[l + 32] = ds1 * Float(q2)
                        y[l + 64] = ds2 * Float(q3)
                        y[l + 96] = ds3 * Float(q4)
                    }
                }
            }
        }
    }
}

// A fast seeded 64-bit hash of bytes (wyhash's 128-bit multiply-fold mixing, 8 bytes a step),
// for exact-duplicate detection and the seeded train/val/test split. Not cryptographic; stable
// across runs, machines and Swift versions (unlike Hasher, which is seeded per process).

/// Seeded 64-bit hashing of byte strings.
public enum ContentHash {
    private static let k0: UInt64 = 0xA076_1D64_78BD_642F
    private static let k1: UInt64 = 0xE703_7ED1_A0B4_28DB
    private static let k2: UInt64 = 0x8EBC_6AF0_9C88_C6E3

    @inline(__always)
    static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let r = a.multipliedFullWidth(by: b)
        return r.high ^ r.low
    }

    /// The hash of `bytes` under `seed`.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let n = bytes.count
        var h = mix(seed ^ k0, UInt64(n) ^ k1)
        guard let p = bytes.baseAddress else { return mix(h, k2) }
        var i = 0
        while i + 16 <= n {
            let a = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let b = p.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)
            h = mix(a ^ k1 ^ h, b ^ k2)
            i += 16
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        var tail2: UInt64 = 0
        var k = i
        while k < n && k < i + 8 { tail |= UInt64(p.load(fromByteOffset: k, as: UInt8.self)) << shift; shift += 8; k += 1 }
        shift = 0
        while k < n { tail2 |= UInt64(p.load(fromByteOffset: k, as: UInt8.self)) << shift; shift += 8; k += 1 }
        h = mix(tail ^ k1 ^ h, tail2 ^ k2)
        return mix(h ^ k0, k1)
    }

    /// The hash of `bytes` under `seed`.
    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    /// A 128-bit hash (two independent 64-bit hashes): collisions among even billions of
    /// records are negligible, so equal hashes are taken as equal content.
    public static func hash128(_ bytes: [UInt8]) -> ContentDigest {
        bytes.withUnsafeBytes { ContentDigest(a: hash($0, seed: 0x5EED_0001), b: hash($0, seed: 0x5EED_0002)) }
    }

    /// A uniform number in [0, 1) from `bytes` and `seed`.
    public static func unitInterval(_ bytes: [UInt8], seed: UInt64) -> Double {
        Double(hash(bytes, seed: seed) >> 11) * 0x1p-53
    }
}

/// A 128-bit content hash.
public struct ContentDigest: Hashable, Sendable {
    public let a: UInt64
    public let b: UInt64
}

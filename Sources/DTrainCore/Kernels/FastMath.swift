/// Vectorised float32 math for the element-wise kernels.
public enum FastMath {
    /// e^x for 8 lanes, within 2 ulp of expf over [-87, 88] (Cephes' range reduction and
    /// polynomial); inputs below -87.3 give 0 and above 88.7 give +inf-like large values.
    @inline(__always)
    public static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        // Clamp, then split x = n·ln2 + r with n rounded to nearest by the 1.5·2²³ trick: adding
        // it leaves n in the low mantissa bits, so no float-to-int conversion is needed.
        var xc = x
        xc.replace(with: -87.33654, where: x .< -87.33654)
        xc.replace(with: 88.72283, where: x .> 88.72283)
        let magic = SIMD8<Float>(repeating: 12_582_912)
        let t = xc * 1.442695040888963 + magic
        let n = t - magic
        var r = xc - n * 0.693359375
        r = r + n * 2.12194440e-4
        var p = SIMD8<Float>(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * (r * r) + r + 1
        // 2^n: the integer n sits in t's low bits; move it into the exponent field.
        let tBits = unsafeBitCast(t, to: SIMD8<UInt32>.self)
        let pow2Bits = (tBits &- 0x4B40_0000 &+ 127) &<< 23
        let result = p * unsafeBitCast(pow2Bits, to: SIMD8<Float>.self)
        // Below the clamp the true value underflows: return 0 (masked scores pass -inf).
        let under = x .< SIMD8<Float>(repeating: -87.33654)
        return unsafeBitCast(unsafeBitCast(result, to: SIMD8<UInt32>.self) & ~unsafeBitCast(under, to: SIMD8<UInt32>.self),
                             to: SIMD8<Float>.self)
    }

    /// dst[i] = e^(src[i] - shift) for i < count; returns Σ dst (float32 lanes, summed at the end).
    @inline(__always)
    public static func expShifted(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>,
                                  _ count: Int, shift: Float) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var i = 0
        let s = SIMD8<Float>(repeating: shift)
        while i + 8 <= count {
            let v = exp(UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float>.self) - s)
            UnsafeMutableRawPointer(dst + i).storeBytes(of: v, as: SIMD8<Float>.self)
            acc += v
            i += 8
        }
        var sum = acc.sum()
        while i < count {
            var lane = SIMD8<Float>(repeating: -.infinity)
            lane[0] = src[i] - shift
            let e = exp(lane)[0]
            dst[i] = e
            sum += e
            i += 1
        }
        return sum
    }

    /// Largest element of a row.
    @inline(__always)
    public static func max(_ src: UnsafePointer<Float>, _ count: Int) -> Float {
        var m = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        while i + 8 <= count {
            let v = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float>.self)
            m.replace(with: v, where: v .> m)
            i += 8
        }
        var r = m.max()
        while i < count { r = Swift.max(r, src[i]); i += 1 }
        return r
    }

    /// Σ a[i]·b[i] for i < count (float32 lanes, summed at the end).
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            acc += load(a, i) * load(b, i)
            i += 8
        }
        var sum = acc.sum()
        while i < count { sum += a[i] * b[i]; i += 1 }
        return sum
    }

    /// Σ a[i]·b[i]·c[i] for i < count (float32 lanes, summed at the end).
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            acc += load(a, i) * load(b, i) * load(c, i)
            i += 8
        }
        var sum = acc.sum()
        while i < count { sum += a[i] * b[i] * c[i]; i += 1 }
        return sum
    }

    /// 1 / (1 + e^-x) for 8 lanes.
    @inline(__always)
    public static func sigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> {
        1 / (1 + exp(-x))
    }

    /// Eight floats at p + i.
    @inline(__always)
    public static func load(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
        UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// Stores eight floats at p + i.
    @inline(__always)
    public static func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
    }
}

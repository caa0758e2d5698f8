// Tests of the GGUF reader, the ggml dequantizers and the Llama loader.
//
// Synthetic files are written by a small writer below; quantized blocks are packed here from
// logical values (scales, mins, integer quants) following the block layouts, and the expected floats
// are computed from those logical values, so the decoders are checked against an independent model.
import DTrainCore
import DTrainTestSupport
import Foundation
import Testing
import DTrainIO

// MARK: - A tiny GGUF writer

/// Builds GGUF files in memory for tests.
fileprivate struct TestGGUFWriter {
    var magic: [UInt8] = Array("GGUF".utf8)
    var version: UInt32 = 3
    /// Written as `general.alignment` (uint32) when not 32.
    var alignment = 32
    var metadata: [(String, GGUFValue)] = []
    var tensors: [(name: String, dims: [Int], typeID: UInt32, data: [UInt8])] = []

    mutating func add(_ key: String, _ value: GGUFValue) { metadata.append((key, value)) }

    mutating func addTensor(_ name: String, dims: [Int], typeID: UInt32, data: [UInt8]) {
        tensors.append((name, dims, typeID, data))
    }

    mutating func addF32(_ name: String, dims: [Int], values: [Float]) {
        addTensor(name, dims: dims, typeID: 0, data: values.flatMap { le($0.bitPattern) })
    }

    /// GGUF's id of a value's type.
    static func typeID(_ v: GGUFValue) -> UInt32 { GGUFWriter.typeID(v) }

    static func encodeString(_ s: String, into out: inout [UInt8]) {
        let bytes = Array(s.utf8)
        out += le(UInt64(bytes.count))
        out += bytes
    }

    static func encode(_ v: GGUFValue, into out: inout [UInt8]) {
        switch v {
        case .uint8(let x): out.append(x)
        case .int8(let x): out.append(UInt8(bitPattern: x))
        case .uint16(let x): out += le(x)
        case .int16(let x): out += le(UInt16(bitPattern: x))
        case .uint32(let x): out += le(x)
        case .int32(let x): out += le(UInt32(bitPattern: x))
        case .float32(let x): out += le(x.bitPattern)
        case .bool(let x): out.append(x ? 1 : 0)
        case .string(let s): encodeString(s, into: &out)
        case .array(let a):
            out += le(a.first.map(typeID) ?? 8)
            out += le(UInt64(a.count))
            for e in a { encode(e, into: &out) }
        case .uint64(let x): out += le(x)
        case .int64(let x): out += le(UInt64(bitPattern: x))
        case .float64(let x): out += le(x.bitPattern)
        }
    }

    func bytes() -> [UInt8] {
        var out = magic
        out += le(version)
        out += le(UInt64(tensors.count))
        var kvs = metadata
        if alignment != 32 { kvs.append(("general.alignment", .uint32(UInt32(alignment)))) }
        out += le(UInt64(kvs.count))
        for (key, value) in kvs {
            Self.encodeString(key, into: &out)
            out += le(Self.typeID(value))
            Self.encode(value, into: &out)
        }
        var offsets: [Int] = []
        var dataSize = 0
        for t in tensors {
            offsets.append(dataSize)
            dataSize = (dataSize + t.data.count + alignment - 1) / alignment * alignment
        }
        for (t, offset) in zip(tensors, offsets) {
            Self.encodeString(t.name, into: &out)
            out += le(UInt32(t.dims.count))
            for d in t.dims { out += le(UInt64(d)) }
            out += le(t.typeID)
            out += le(UInt64(offset))
        }
        while out.count % alignment != 0 { out.append(0) }
        let dataStart = out.count
        for (t, offset) in zip(tensors, offsets) {
            while out.count < dataStart + offset { out.append(0) }
            out += t.data
        }
        return out
    }

    /// Writes `bytes` (default: this file) to a fresh temporary path.
    func write(_ bytes: [UInt8]? = nil) throws -> String {
        try writeTemp(bytes ?? self.bytes())
    }
}

fileprivate func le<T: FixedWidthInteger>(_ x: T) -> [UInt8] {
    withUnsafeBytes(of: x.littleEndian) { Array($0) }
}

fileprivate func writeTemp(_ bytes: [UInt8]) throws -> String {
    let url = TestScratch.file("broken.gguf")
    try Data(bytes).write(to: url)
    return url.path
}

/// The error `body` throws, or nil.
fileprivate func thrown(_ body: () throws -> Void) -> Error? {
    do { try body(); return nil } catch { return error }
}

/// Half bits of `x` (rounded to nearest) and the float value those bits hold, via Swift's Float16.
fileprivate func half(_ x: Float) -> (bits: UInt16, value: Float) {
    let h = Float16(x)
    return (h.bitPattern, Float(h))
}

/// Bitwise comparison; records the first differing element.
fileprivate func expectBitExact(_ actual: [Float], _ expected: [Float], _ label: String,
                    sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(label): \(actual.count) values, expected \(expected.count)",
            sourceLocation: sourceLocation)
    guard actual.count == expected.count else { return }
    if let i = (0..<actual.count).first(where: { actual[$0].bitPattern != expected[$0].bitPattern }) {
        let message = "\(label): element \(i) is \(actual[i]) (0x\(String(actual[i].bitPattern, radix: 16))), "
            + "expected \(expected[i]) (0x\(String(expected[i].bitPattern, radix: 16))); "
            + compare(actual, expected, label: label).description
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    }
}

/// Writes a one-tensor file and reads the tensor back as floats.
fileprivate func roundTrip(typeID: UInt32, count: Int, data: [UInt8]) throws -> [Float] {
    var w = TestGGUFWriter()
    w.add("general.architecture", .string("test"))
    w.addTensor("t", dims: [count], typeID: typeID, data: data)
    let path = try w.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let file = try GGUFFile(path: path)
    return try file.floats("t")
}

/// A deterministic stream of pseudo-random integers for block contents.
fileprivate struct Pattern {
    var state: UInt64
    init(_ seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next(_ n: Int) -> Int {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Int(state % UInt64(n))
    }
}

// MARK: - Metadata

@Test func ggufMetadataAllValueTypesV2AndV3() throws {
    for version: UInt32 in [2, 3] {
        var w = TestGGUFWriter()
        w.version = version
        w.alignment = 64
        w.add("general.architecture", .string("llama"))
        w.add("u8", .uint8(200))
        w.add("i8", .int8(-100))
        w.add("u16", .uint16(60000))
        w.add("i16", .int16(-30000))
        w.add("u32", .uint32(4_000_000_000))
        w.add("i32", .int32(-2_000_000_000))
        w.add("f32", .float32(0.15625))
        w.add("bool.t", .bool(true))
        w.add("bool.f", .bool(false))
        w.add("str", .string("héllo ☃ \u{1F600}"))
        w.add("empty.str", .string(""))
        w.add("u64", .uint64(UInt64.max))
        w.add("i64", .int64(-9_000_000_000))
        w.add("f64", .float64(1e-300))
        w.add("arr.str", .array([.string("a"), .string("Ġb"), .string("")]))
        w.add("arr.i32", .array([.int32(1), .int32(-2), .int32(3)]))
        w.add("arr.f32", .array([.float32(0.5), .float32(-1.25)]))
        w.add("arr.u8", .array([.uint8(1), .uint8(255)]))
        w.add("arr.nested", .array([.array([.int32(1), .int32(2)]), .array([.int32(3)])]))
        w.add("arr.nested.str", .array([.array([.string("x")]), .array([.string("y"), .string("z")])]))
        w.addF32("first", dims: [3], values: [1, 2, 3])
        w.addF32("second", dims: [2, 3], values: [1, 2, 3, 4, 5, 6])
        w.addF32("third", dims: [1], values: [7])
        let path = try w.write()
        defer { try? FileManager.default.removeItem(atPath: path) }

        let f = try GGUFFile(path: path)
        let m = f.metadata
        #expect(f.version == Int(version))
        #expect(f.alignment == 64)
        #expect(f.dataOffset % 64 == 0)
        #expect(m["general.architecture"]?.string == "llama")
        #expect(m["u8"] == .uint8(200) && m["u8"]?.int == 200)
        #expect(m["i8"]?.int == -100)
        #expect(m["u16"]?.int == 60000)
        #expect(m["i16"]?.int == -30000)
        #expect(m["u32"]?.int == 4_000_000_000)
        #expect(m["i32"]?.int == -2_000_000_000)
        #expect(m["f32"]?.float == 0.15625)
        #expect(m["f32"]?.int == nil)
        #expect(m["u32"]?.float == 4e9)
        #expect(m["bool.t"]?.bool == true && m["bool.f"]?.bool == false)
        #expect(m["str"]?.string == "héllo ☃ \u{1F600}")
        #expect(m["empty.str"]?.string == "")
        #expect(m["u64"] == .uint64(UInt64.max) && m["u64"]?.int == nil)
        #expect(m["i64"]?.int == -9_000_000_000)
        #expect(m["f64"] == .float64(1e-300))
        #expect(m["arr.str"]?.stringArray == ["a", "Ġb", ""])
        #expect(m["arr.str"]?.intArray == nil)
        #expect(m["arr.i32"]?.intArray == [1, -2, 3])
        #expect(m["arr.f32"]?.floatArray == [0.5, -1.25])
        #expect(m["arr.u8"]?.intArray == [1, 255])
        #expect(m["arr.nested"]?.array?.map { $0.intArray ?? [] } == [[1, 2], [3]])
        #expect(m["arr.nested.str"]?.array?.map { $0.stringArray ?? [] } == [["x"], ["y", "z"]])
        #expect(m["str"]?.array == nil && m["str"]?.stringArray == nil)
        #expect(m["general.alignment"]?.int == 64)

        #expect(f.tensorNames == ["first", "second", "third"])
        let second = try #require(f.tensors["second"])
        #expect(second.dims == [2, 3] && second.type == .f32 && second.elementCount == 6 && second.byteCount == 24)
        #expect(second.offset == f.dataOffset + 64)
        #expect(second.rowLength == 2 && second.rowCount == 3)
        #expect(try f.floats("second") == [1, 2, 3, 4, 5, 6])
        #expect(try f.floats("third") == [7])
    }
}

@Test func ggufBigStringArraysParseFast() throws {
    var w = TestGGUFWriter()
    let tokens = (0..<49152).map { GGUFValue.string("tok\($0)_Ġx") }
    let merges = (0..<48900).map { GGUFValue.string("Ġa\($0) b\($0)") }
    w.add("tokenizer.ggml.tokens", .array(tokens))
    w.add("tokenizer.ggml.merges", .array(merges))
    w.add("tokenizer.ggml.token_type", .array((0..<49152).map { .int32(Int32($0 % 3)) }))
    let path = try w.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let clock = ContinuousClock()
    var file: GGUFFile?
    let openTime = try clock.measure { file = try GGUFFile(path: path) }
    var strings: [String]?
    let accessTime = clock.measure { strings = file?.metadata["tokenizer.ggml.tokens"]?.stringArray }
    print("GGUF: parsed 49152 tokens + 48900 merges in \(openTime), stringArray in \(accessTime)")
    #expect(strings?.count == 49152 && strings?[12345] == "tok12345_Ġx")
    #expect(file?.metadata["tokenizer.ggml.merges"]?.stringArray?.last == "Ġa48899 b48899")
    #expect(file?.metadata["tokenizer.ggml.token_type"]?.intArray?[5] == 2)
    #expect(openTime < .milliseconds(500))
}

// MARK: - Dequantization, one test per type

@Test func ggufHalfToFloatMatchesFloat16ForAllPatterns() {
    for bits in 0...UInt16.max {
        let ours = GGMLQuant.halfToFloat(bits)
        let swift = Float(Float16(bitPattern: bits))
        if swift.isNaN {
            #expect(ours.isNaN, "half 0x\(String(bits, radix: 16))")
        } else if ours.bitPattern != swift.bitPattern {
            Issue.record("half 0x\(String(bits, radix: 16)): \(ours) != \(swift)")
            return
        }
    }
}

@Test func ggufDequantF32() throws {
    let values: [Float] = [0, -0.0, 1.5, -3.25e-20, .infinity, 3.4e38, Float(bitPattern: 1)]
    let out = try roundTrip(typeID: 0, count: values.count, data: values.flatMap { le($0.bitPattern) })
    expectBitExact(out, values, "f32")
}

@Test func ggufDequantF16() throws {
    var bits: [UInt16] = [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x3555]
    var p = Pattern(1)
    for _ in 0..<52 { bits.append(UInt16(p.next(0x7C00))) }
    let out = try roundTrip(typeID: 1, count: bits.count, data: bits.flatMap { le($0) })
    expectBitExact(out, bits.map { Float(Float16(bitPattern: $0)) }, "f16")
}

@Test func ggufDequantBF16() throws {
    var bits: [UInt16] = [0x0000, 0x8000, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x0001, 0x7F7F, 0x4049]
    var p = Pattern(2)
    for _ in 0..<23 { bits.append(UInt16(p.next(0x7F80))) }
    let out = try roundTrip(typeID: 30, count: bits.count, data: bits.flatMap { le($0) })
    // bfloat16 is the top half of a float32: 0x4049 -> 0x40490000 = 3.140625.
    expectBitExact(out, bits.map { Float(bitPattern: UInt32($0) << 16) }, "bf16")
    #expect(out[8] == 3.140625)
}

@Test func ggufDequantQ8_0() throws {
    var data: [UInt8] = [], expected: [Float] = []
    var p = Pattern(3)
    for d: Float in [0.0123, -2.5, 0.5] {
        let h = half(d)
        data += le(h.bits)
        for j in 0..<32 {
            let q = j == 0 ? -128 : (j == 1 ? 127 : p.next(256) - 128)
            data.append(UInt8(bitPattern: Int8(q)))
            expected.append(Float(q) * h.value)
        }
    }
    expectBitExact(try roundTrip(typeID: 8, count: 96, data: data), expected, "q8_0")
}

@Test func ggufDequantQ4_0() throws {
    var data: [UInt8] = [], expected: [Float] = []
    var p = Pattern(4)
    for d: Float in [0.0371, -1.0 / 3] {
        let h = half(d)
        let q = (0..<32).map { $0 < 2 ? $0 * 15 : p.next(16) }  // element e's 4-bit quant
        data += le(h.bits)
        for j in 0..<16 { data.append(UInt8(q[j] | (q[j + 16] << 4))) }  // low nibble: e < 16
        expected += q.map { Float($0 - 8) * h.value }
    }
    expectBitExact(try roundTrip(typeID: 2, count: 64, data: data), expected, "q4_0")
}

@Test func ggufDequantQ4_1() throws {
    var data: [UInt8] = [], expected: [Float] = []
    var p = Pattern(5)
    for (d, m) in [(Float(0.0371), Float(-0.3)), (Float(0.1), Float(1.7))] {
        let hd = half(d), hm = half(m)
        let q = (0..<32).map { _ in p.next(16) }
        data += le(hd.bits) + le(hm.bits)
        for j in 0..<16 { data.append(UInt8(q[j] | (q[j + 16] << 4))) }
        expected += q.map { Float($0) * hd.value + hm.value }
    }
    expectBitExact(try roundTrip(typeID: 3, count: 64, data: data), expected, "q4_1")
}

/// Q5_0 / Q5_1 blocks: element e has a 5-bit quant; its low 4 bits go in nibble (e < 16 ? low : high)
/// of byte e % 16, its fifth bit is bit e of the 32-bit `qh`.
fileprivate func packQ5Block(_ q: [Int]) -> (qh: [UInt8], qs: [UInt8]) {
    var qh: UInt32 = 0
    for e in 0..<32 where q[e] & 16 != 0 { qh |= 1 << UInt32(e) }
    let qs = (0..<16).map { UInt8((q[$0] & 15) | ((q[$0 + 16] & 15) << 4)) }
    return (le(qh), qs)
}

@Test func ggufDequantQ5_0() throws {
    var data: [UInt8] = [], expected: [Float] = []
    var p = Pattern(6)
    for d: Float in [0.0213, -0.77] {
        let h = half(d)
        let q = (0..<32).map { $0 == 0 ? 31 : ($0 == 31 ? 16 : p.next(32)) }
        let packed = packQ5Block(q)
        data += le(h.bits) + packed.qh + packed.qs
        expected += q.map { Float($0 - 16) * h.value }
    }
    expectBitExact(try roundTrip(typeID: 6, count: 64, data: data), expected, "q5_0")
}

@Test func ggufDequantQ5_1() throws {
    var data: [UInt8] = [], expected: [Float] = []
    var p = Pattern(7)
    for (d, m) in [(Float(0.0213), Float(-0.41)), (Float(0.003), Float(0.25))] {
        let hd = half(d), hm = half(m)
        let q = (0..<32).map { _ in p.next(32) }
        let packed = packQ5Block(q)
        data += le(hd.bits) + le(hm.bits) + packed.qh + packed.qs
        expected += q.map { Float($0) * hd.value + hm.value }
    }
    expectBitExact(try roundTrip(typeID: 7, count: 64, data: data), expected, "q5_1")
}

/// The 12 scale bytes of a Q4_K / Q5_K super-block holding eight 6-bit scales and mins: sub-blocks
/// 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 keep their low 4 bits
/// in bytes 8-11 (scale low nibble, min high nibble) and their top 2 bits in the top bits of bytes
/// 0-3 (scales) and 4-7 (mins).
fileprivate func packKScales(_ sc: [Int], _ mn: [Int]) -> [UInt8] {
    var s = [UInt8](repeating: 0, count: 12)
    for j in 0..<4 {
        s[j] = UInt8(sc[j] | ((sc[j + 4] >> 4) << 6))
        s[j + 4] = UInt8(mn[j] | ((mn[j + 4] >> 4) << 6))
        s[j + 8] = UInt8((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4))
    }
    return s
}

/// Q4_K / Q5_K element e (0..<256) sits in sub-block e/32; group g = e/64 stores its 64 elements
/// in bytes 32g..<32g+32: the first 32 in the low nibbles, the next 32 in the high nibbles.
fileprivate func packKNibbles(_ q: [Int]) -> [UInt8] {
    (0..<128).map { i in
        let g = i / 32, l = i % 32
        return UInt8((q[64 * g + l] & 15) | ((q[64 * g + 32 + l] & 15) << 4))
    }
}

@Test func ggufDequantQ4_K() throws {
    var data: [UInt8] = [], expected: [Float] = []
    var p = Pattern(8)
    for (d, dmin) in [(Float(0.00123), Float(0.00071)), (Float(0.05), Float(0.02))] {
        let hd = half(d), hm = half(dmin)
        let sc = (0..<8).map { $0 == 7 ? 63 : p.next(64) }, mn = (0..<8).map { $0 == 5 ? 63 : p.next(64) }
        let q = (0..<256).map { _ in p.next(16) }
        data += le(hd.bits) + le(hm.bits) + packKScales(sc, mn) + packKNibbles(q)
        expected += (0..<256).map { e in
            let s = e / 32
            return hd.value * Float(sc[s]) * Float(q[e]) - hm.value * Float(mn[s])
        }
    }
    expectBitExact(try roundTrip(typeID: 12, count: 512, data: data), expected, "q4_K")
}

@Test func ggufDequantQ5_K() throws {
    var data: [UInt8] = [], expected: [Float] = []
    var p = Pattern(9)
    for (d, dmin) in [(Float(0.00123), Float(0.00071)), (Float(0.031), Float(0.0077))] {
        let hd = half(d), hm = half(dmin)
        let sc = (0..<8).map { _ in p.next(64) }, mn = (0..<8).map { _ in p.next(64) }
        let q = (0..<256).map { _ in p.next(32) }
        // Fifth bit of element e: bit (e / 32) of qh[e % 32].
        var qh = [UInt8](repeating: 0, count: 32)
        for e in 0..<256 where q[e] & 16 != 0 { qh[e % 32] |= UInt8(1 << (e / 32)) }
        data += le(hd.bits) + le(hm.bits) + packKScales(sc, mn) + qh + packKNibbles(q)
        expected += (0..<256).map { e in
            let s = e / 32
            return hd.value * Float(sc[s]) * Float(q[e]) - hm.value * Float(mn[s])
        }
    }
    expectBitExact(try roundTrip(typeID: 13, count: 512, data: data), expected, "q5_K")
}

@Test func ggufDequantQ6_K() throws {
    var data: [UInt8] = [], expected: [Float] = []
    var p = Pattern(10)
    for d: Float in [0.000917, -0.0421] {
        let hd = half(d)
        let sc = (0..<16).map { $0 == 0 ? -128 : ($0 == 1 ? 127 : p.next(256) - 128) }  // int8, one per 16 elements
        let q = (0..<256).map { _ in p.next(64) }                                       // 6-bit, value q - 32
        // Element e: half n = e/128, quarter k = (e%128)/32, l = e%32. Low 4 bits in nibble k/2 of
        // ql[64n + 32(k%2) + l]; top 2 bits at bits 2k of qh[32n + l].
        var ql = [UInt8](repeating: 0, count: 128), qh = [UInt8](repeating: 0, count: 64)
        for e in 0..<256 {
            let n = e / 128, k = (e % 128) / 32, l = e % 32
            ql[64 * n + 32 * (k % 2) + l] |= UInt8((q[e] & 15) << (4 * (k / 2)))
            qh[32 * n + l] |= UInt8((q[e] >> 4) << (2 * k))
        }
        data += ql + qh + sc.map { UInt8(bitPattern: Int8($0)) } + le(hd.bits)
        expected += (0..<256).map { e in hd.value * Float(sc[e / 16]) * Float(q[e] - 32) }
    }
    expectBitExact(try roundTrip(typeID: 14, count: 512, data: data), expected, "q6_K")
}

@Test func ggufDequantLargeTensorSplitsAcrossThreads() throws {
    // 8192 Q4_1 blocks = 262144 elements: above the two-thread threshold.
    let blocks = 8192
    var data: [UInt8] = [], expected: [Float] = []
    data.reserveCapacity(blocks * 20)
    expected.reserveCapacity(blocks * 32)
    var p = Pattern(11)
    for b in 0..<blocks {
        let hd = half(Float(b % 97 + 1) * 0.0011), hm = half(-Float(b % 13) * 0.013)
        let q = (0..<32).map { _ in p.next(16) }
        data += le(hd.bits) + le(hm.bits)
        for j in 0..<16 { data.append(UInt8(q[j] | (q[j + 16] << 4))) }
        expected += q.map { Float($0) * hd.value + hm.value }
    }
    var w = TestGGUFWriter()
    w.addTensor("big", dims: [256, blocks / 8], typeID: 3, data: data)
    let path = try w.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let file = try GGUFFile(path: path)
    #expect(file.tensors["big"]?.byteCount == blocks * 20)
    let out = UnsafeMutablePointer<Float>.allocate(capacity: blocks * 32)
    defer { out.deallocate() }
    try file.dequantize("big", into: out, count: blocks * 32)
    expectBitExact(Array(UnsafeBufferPointer(start: out, count: blocks * 32)), expected, "q4_1 large")

    let mismatch = thrown { try file.dequantize("big", into: out, count: 100) }
    guard case GGUFError.countMismatch(_, "big", blocks * 32, 100)? = mismatch as? GGUFError else {
        Issue.record("expected countMismatch, got \(String(describing: mismatch))"); return
    }
}

// MARK: - Broken files

/// A small valid file whose sections are all non-trivial.
fileprivate func validFileWriter() -> TestGGUFWriter {
    var w = TestGGUFWriter()
    w.add("general.architecture", .string("llama"))
    w.add("tokenizer.ggml.tokens", .array([.string("a"), .string("b"), .string("c")]))
    w.addF32("x", dims: [4, 2], values: [1, 2, 3, 4, 5, 6, 7, 8])
    w.addF32("y", dims: [8], values: [1, 2, 3, 4, 5, 6, 7, 8])
    return w
}

@Test func ggufTruncatedFileThrowsTruncated() throws {
    let full = validFileWriter().bytes()
    for cut in [0, 3, 6, 13, 30, 60, 100, 140, 170, 200, full.count - 40, full.count - 1] where cut < full.count {
        let path = try writeTemp(Array(full.prefix(cut)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = thrown { _ = try GGUFFile(path: path) }
        guard case GGUFError.truncated? = error as? GGUFError else {
            Issue.record("cut at \(cut) of \(full.count): expected truncated, got \(String(describing: error))")
            continue
        }
    }
    // The whole file still opens.
    let path = try writeTemp(full)
    defer { try? FileManager.default.removeItem(atPath: path) }
    #expect(try GGUFFile(path: path).floats("y") == [1, 2, 3, 4, 5, 6, 7, 8])
}

@Test func ggufWrongMagicThrowsBadMagic() throws {
    var w = validFileWriter()
    w.magic = Array("GGML".utf8)
    let path = try w.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let error = thrown { _ = try GGUFFile(path: path) }
    guard case GGUFError.badMagic(_, let found)? = error as? GGUFError else {
        Issue.record("expected badMagic, got \(String(describing: error))"); return
    }
    #expect(found == Array("GGML".utf8))
    #expect("\(error!)".contains("HINT"))
}

@Test func ggufVersion1IsRejected() throws {
    var w = validFileWriter()
    w.version = 1
    let path = try w.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let error = thrown { _ = try GGUFFile(path: path) }
    guard case GGUFError.unsupportedVersion(_, 1)? = error as? GGUFError else {
        Issue.record("expected unsupportedVersion, got \(String(describing: error))"); return
    }
}

@Test func ggufUnknownTensorTypeThrows() throws {
    var w = validFileWriter()
    w.addTensor("weird", dims: [4], typeID: 99, data: [0, 0, 0, 0])
    let path = try w.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let error = thrown { _ = try GGUFFile(path: path) }
    guard case GGUFError.unknownTensorType(_, "weird", 99)? = error as? GGUFError else {
        Issue.record("expected unknownTensorType, got \(String(describing: error))"); return
    }
    #expect("\(error!)".contains("weird") && "\(error!)".contains("99"))
}

@Test func ggufUnsupportedTensorTypeThrowsOnDequantize() throws {
    var w = validFileWriter()
    w.addTensor("q2k", dims: [256], typeID: 10, data: [UInt8](repeating: 0, count: 84))
    let path = try w.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let file = try GGUFFile(path: path)
    #expect(file.tensors["q2k"]?.type == .q2_K)
    let error = thrown { _ = try file.floats("q2k") }
    guard case GGUFError.unsupportedTensorType(_, "q2k", .q2_K)? = error as? GGUFError else {
        Issue.record("expected unsupportedTensorType, got \(String(describing: error))"); return
    }
    let missing = thrown { _ = try file.floats("nope") }
    guard case GGUFError.tensorNotFound(_, "nope")? = missing as? GGUFError else {
        Issue.record("expected tensorNotFound, got \(String(describing: missing))"); return
    }
}

// MARK: - Llama loader on synthetic models

/// A synthetic model file plus the HF-layout values the loader must produce.
fileprivate struct SyntheticModel {
    let path: String
    let expected: [String: [Float]]
}

/// Writes a 2-layer model (V 20, C 32, F 64, NH 4, KVH 2, HD 8). Values are small integers so
/// q/k can be stored as Q8_0 with d = 1 exactly; for `llama` the q/k rows are stored the way
/// convert_hf_to_gguf.py stores them (LlamaModel.permute).
fileprivate func makeSyntheticModel(arch: String, bias: Bool, tied: Bool, omit: String? = nil,
                        overrideDims: [String: [Int]] = [:]) throws -> SyntheticModel {
    let V = 20, C = 32, F = 64, L = 2, NH = 4, KVH = 2, HD = 8
    var w = TestGGUFWriter()
    w.add("general.architecture", .string(arch))
    w.add("\(arch).embedding_length", .uint32(UInt32(C)))
    w.add("\(arch).feed_forward_length", .uint32(UInt32(F)))
    w.add("\(arch).block_count", .uint32(UInt32(L)))
    w.add("\(arch).attention.head_count", .uint32(UInt32(NH)))
    w.add("\(arch).attention.head_count_kv", .uint32(UInt32(KVH)))
    w.add("\(arch).rope.freq_base", .float32(500000))
    w.add("\(arch).attention.layer_norm_rms_epsilon", .float32(1e-6))
    w.add("\(arch).context_length", .uint32(4096))
    w.add("\(arch).rope.dimension_count", .uint32(UInt32(HD)))
    if arch == "qwen2" { w.add("\(arch).vocab_size", .uint32(UInt32(V))) }
    w.add("tokenizer.ggml.tokens", .array((0..<V).map { .string("t\($0)") }))

    var expected: [String: [Float]] = [:]
    var counter = 0
    func values(_ n: Int) -> [Float] {
        counter += 1
        return (0..<n).map { Float((counter * 37 + $0 * 11) % 255 - 127) }
    }
    /// convert_hf_to_gguf.py's LlamaModel.permute: w.reshape(H, 2, HD/2, cols).swapaxes(1, 2),
    /// i.e. output row (h, i, s) is input row (h, s, i).
    func converterPermute(_ rows: [Float], heads: Int, cols: Int) -> [Float] {
        let hd = rows.count / cols / heads
        var out = [Float](repeating: 0, count: rows.count)
        for h in 0..<heads { for i in 0..<(hd / 2) { for s in 0..<2 {
            let dstRow = h * hd + i * 2 + s, srcRow = h * hd + s * (hd / 2) + i
            for c in 0..<cols { out[dstRow * cols + c] = rows[srcRow * cols + c] }
        } } }
        return out
    }
    func q8_0(_ rowsData: [Float]) -> [UInt8] {
        var out: [UInt8] = []
        for b in 0..<(rowsData.count / 32) {
            out += le(UInt16(0x3C00))  // d = 1
            for j in 0..<32 { out.append(UInt8(bitPattern: Int8(rowsData[b * 32 + j]))) }
        }
        return out
    }
    func add(_ gguf: String, _ hf: String, _ hfShape: [Int], heads: Int? = nil, quantize: Bool = false) {
        let n = hfShape.reduce(1, *)
        let hfValues = values(n)
        expected[hf] = hfValues
        guard gguf != omit else { return }
        var stored = hfValues
        if arch == "llama", let heads {
            stored = converterPermute(hfValues, heads: heads, cols: hfShape.count > 1 ? hfShape[1] : 1)
        }
        let dims = overrideDims[gguf] ?? Array(hfShape.reversed())
        if quantize {
            w.addTensor(gguf, dims: dims, typeID: 8, data: q8_0(stored))
        } else {
            w.addF32(gguf, dims: dims, values: stored)
        }
    }
    add("token_embd.weight", "model.embed_tokens.weight", [V, C])
    for l in 0..<L {
        let b = "blk.\(l).", h = "model.layers.\(l)."
        add(b + "attn_norm.weight", h + "input_layernorm.weight", [C])
        add(b + "attn_q.weight", h + "self_attn.q_proj.weight", [NH * HD, C], heads: NH, quantize: true)
        add(b + "attn_k.weight", h + "self_attn.k_proj.weight", [KVH * HD, C], heads: KVH, quantize: true)
        add(b + "attn_v.weight", h + "self_attn.v_proj.weight", [KVH * HD, C])
        if bias {
            add(b + "attn_q.bias", h + "self_attn.q_proj.bias", [NH * HD], heads: NH)
            add(b + "attn_k.bias", h + "self_attn.k_proj.bias", [KVH * HD], heads: KVH)
            add(b + "attn_v.bias", h + "self_attn.v_proj.bias", [KVH * HD])
        }
        add(b + "attn_output.weight", h + "self_attn.o_proj.weight", [C, NH * HD])
        add(b + "ffn_norm.weight", h + "post_attention_layernorm.weight", [C])
        add(b + "ffn_gate.weight", h + "mlp.gate_proj.weight", [F, C])
        add(b + "ffn_up.weight", h + "mlp.up_proj.weight", [F, C])
        add(b + "ffn_down.weight", h + "mlp.down_proj.weight", [C, F])
    }
    add("output_norm.weight", "model.norm.weight", [C])
    if !tied { add("output.weight", "lm_head.weight", [V, C]) }
    return SyntheticModel(path: try w.write(), expected: expected)
}

/// Loads a synthetic model and checks every HF tensor against its expected values.
fileprivate func checkSyntheticLoad(arch: String, bias: Bool, tied: Bool) throws {
    let model = try makeSyntheticModel(arch: arch, bias: bias, tied: tied)
    defer { try? FileManager.default.removeItem(atPath: model.path) }
    let file = try GGUFFile(path: model.path)
    let config = try GGUFLlamaLoader.config(from: file)
    #expect(config == LlamaConfig(architecture: arch, vocabSize: 20, hiddenSize: 32, intermediateSize: 64,
                                  numLayers: 2, numHeads: 4, numKVHeads: 2, headDim: 8, ropeTheta: 500000,
                                  rmsNormEps: 1e-6, tieWordEmbeddings: tied, attentionBias: bias,
                                  maxPositionEmbeddings: 4096))
    let layout = ParameterLayout(config: config)
    let buffer = FloatBuffer(count: layout.count)
    try GGUFLlamaLoader.loadWeights(from: file, config: config, layout: layout, into: buffer)
    #expect(layout.specs.count == model.expected.count)
    for spec in layout.specs {
        let actual = Array(UnsafeBufferPointer(start: buffer.pointer(at: spec.offset), count: spec.count))
        guard let want = model.expected[spec.name] else { Issue.record("no expectation for \(spec.name)"); continue }
        #expect(actual == want, "\(arch): \(spec.name) differs: \(compare(actual, want, label: spec.name))")
    }
}

@Test func ggufLoaderLlamaUndoesQKPermutation() throws {
    try checkSyntheticLoad(arch: "llama", bias: false, tied: false)
}

@Test func ggufLoaderLlamaWithBiasesUndoesPermutationOfBiases() throws {
    try checkSyntheticLoad(arch: "llama", bias: true, tied: true)
}

@Test func ggufLoaderQwen2KeepsRowOrder() throws {
    try checkSyntheticLoad(arch: "qwen2", bias: true, tied: true)
}

@Test func ggufLoaderMissingTensorThrows() throws {
    let model = try makeSyntheticModel(arch: "llama", bias: false, tied: false, omit: "blk.1.ffn_up.weight")
    defer { try? FileManager.default.removeItem(atPath: model.path) }
    let file = try GGUFFile(path: model.path)
    let config = try GGUFLlamaLoader.config(from: file)
    let layout = ParameterLayout(config: config)
    let error = thrown {
        try GGUFLlamaLoader.loadWeights(from: file, config: config, layout: layout, into: FloatBuffer(count: layout.count))
    }
    guard case GGUFLlamaLoaderError.missingTensor(_, "blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight", [32, 64])? =
            error as? GGUFLlamaLoaderError else {
        Issue.record("expected missingTensor, got \(String(describing: error))"); return
    }
    #expect("\(error!)".contains(model.path))
}

@Test func ggufLoaderShapeMismatchThrows() throws {
    let model = try makeSyntheticModel(arch: "llama", bias: false, tied: false,
                                       overrideDims: ["blk.0.ffn_down.weight": [32, 64]])
    defer { try? FileManager.default.removeItem(atPath: model.path) }
    let file = try GGUFFile(path: model.path)
    let config = try GGUFLlamaLoader.config(from: file)
    let layout = ParameterLayout(config: config)
    let error = thrown {
        try GGUFLlamaLoader.loadWeights(from: file, config: config, layout: layout, into: FloatBuffer(count: layout.count))
    }
    guard case GGUFLlamaLoaderError.shapeMismatch(_, "blk.0.ffn_down.weight", _, [64, 32], [32, 64])? =
            error as? GGUFLlamaLoaderError else {
        Issue.record("expected shapeMismatch, got \(String(describing: error))"); return
    }
}

@Test func ggufLoaderUnsupportedArchitectureThrows() throws {
    var w = validFileWriter()
    w.metadata[0] = ("general.architecture", .string("gpt2"))
    let path = try w.write()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let error = thrown { _ = try GGUFLlamaLoader.config(from: GGUFFile(path: path)) }
    guard case GGUFLlamaLoaderError.unsupportedArchitecture(_, "gpt2")? = error as? GGUFLlamaLoaderError else {
        Issue.record("expected unsupportedArchitecture, got \(String(describing: error))"); return
    }
    #expect("\(error!)".contains("llama"))
}

// MARK: - The real model

@Test func ggufSmolLM2LoadsAllWeights() throws {
    let path = try Fixtures.smolLM2Path()
    let clock = ContinuousClock()
    var fileOrNil: GGUFFile?
    let openTime = try clock.measure { fileOrNil = try GGUFFile(path: path) }
    let file = try #require(fileOrNil)
    let config = try GGUFLlamaLoader.config(from: file)
    #expect(config.architecture == "llama")
    #expect(config.hiddenSize == 576 && config.numLayers == 30 && config.numHeads == 9 && config.numKVHeads == 3)
    #expect(config.vocabSize == 49152 && config.intermediateSize == 1536 && config.headDim == 64)
    #expect(config.tieWordEmbeddings && !config.attentionBias)
    #expect(file.metadata["tokenizer.ggml.tokens"]?.stringArray?.count == 49152)

    let layout = ParameterLayout(config: config)
    #expect(layout.count == 134_515_008)
    let buffer = FloatBuffer(count: layout.count)
    let loadTime = try clock.measure {
        try GGUFLlamaLoader.loadWeights(from: file, config: config, layout: layout, into: buffer)
    }
    print("GGUF: SmolLM2 opened in \(openTime), \(layout.count) weights loaded in \(loadTime)")
    var firstBad: Int?
    for i in 0..<layout.count where !buffer.base[i].isFinite { firstBad = i; break }
    #expect(firstBad == nil, "non-finite weight at \(firstBad ?? -1)")
    // Norm weights are positive scales around 1; embeddings are small.
    let finalNorm = Array(UnsafeBufferPointer(start: buffer.pointer(at: layout.finalNorm), count: 576))
    #expect(finalNorm.contains { $0 != 0 })
    let embeddingMax = (0..<(49152 * 576)).reduce(Float(0)) { max($0, abs(buffer.base[layout.embedding + $1])) }
    #expect(embeddingMax > 0 && embeddingMax < 100)
}

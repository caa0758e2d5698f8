// GGUF v3 writer: the layout GGUFFile reads (see its header), tensors in F32, F16 or Q8_0.
// Tensor data starts at a multiple of `alignment` (32, ggml's default, so no
// `general.alignment` key is written) and each tensor is padded to it.
import DTrainCore
import Foundation

/// Writes a GGUF file: metadata in the order given, then tensor infos, then data.
public enum GGUFWriter {
    public static let alignment = 32

    /// One tensor to write: values in row-major order of `shape` (outermost first, as in
    /// Hugging Face), stored as `type`. GGUF lists the extents innermost first; the writer
    /// reverses them.
    public struct Tensor {
        public let name: String
        public let shape: [Int]
        public let type: GGMLType
        public let values: UnsafePointer<Float>
        public init(name: String, shape: [Int], type: GGMLType, values: UnsafePointer<Float>) {
            self.name = name; self.shape = shape; self.type = type; self.values = values
        }
    }

    /// The types the writer can store.
    public static let writableTypes: [GGMLType] = [.f32, .f16, .q8_0]

    /// Writes `metadata` and `tensors` to `path` (a new file; the caller renames a finished
    /// directory into place). Q8_0 needs each tensor's innermost extent to be a multiple of 32.
    public static func write(metadata: [(String, GGUFValue)], tensors: [Tensor], to path: String) throws {
        var header = Data()
        header.append(contentsOf: Array("GGUF".utf8))
        append(&header, UInt32(3))
        append(&header, UInt64(tensors.count))
        append(&header, UInt64(metadata.count))
        for (key, value) in metadata {
            appendString(&header, key)
            append(&header, typeID(value))
            appendValue(&header, value)
        }
        var offset = 0
        var sizes: [Int] = []
        for t in tensors {
            precondition(writableTypes.contains(t.type), "GGUFWriter: cannot store \(t.type)")
            let count = t.shape.reduce(1, *), inner = t.shape.last ?? 1
            precondition(inner % t.type.blockSize == 0, "GGUFWriter: \(t.name)'s rows of \(inner) do not split into \(t.type) blocks")
            appendString(&header, t.name)
            append(&header, UInt32(t.shape.count))
            for d in t.shape.reversed() { append(&header, UInt64(d)) }
            append(&header, t.type.rawValue)
            append(&header, UInt64(offset))
            let bytes = count / t.type.blockSize * t.type.typeSize
            sizes.append(bytes)
            offset += (bytes + alignment - 1) / alignment * alignment
        }
        while header.count % alignment != 0 { header.append(0) }
        guard FileManager.default.createFile(atPath: path, contents: header),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw FileError(path: path, action: "write", errno: errno)
        }
        defer { try? handle.close() }
        do {
            try handle.seekToEnd()
            for (t, bytes) in zip(tensors, sizes) {
                var data = encode(t)
                precondition(data.count == bytes)
                while data.count % alignment != 0 { data.append(0) }
                try handle.write(contentsOf: data)
            }
            try handle.synchronize()
        } catch {
            throw FileError(path: path, action: "write", error: error)
        }
    }

    /// A tensor's bytes in its type.
    static func encode(_ t: Tensor) -> Data {
        let count = t.shape.reduce(1, *), x = t.values
        switch t.type {
        case .f32:
            return Data(bytes: x, count: count * 4)
        case .f16:
            var out = [UInt16](repeating: 0, count: count)
            for i in 0..<count { out[i] = Float16(x[i]).bitPattern.littleEndian }
            return out.withUnsafeBytes { Data($0) }
        case .q8_0:
            // ggml's reference quantize_row_q8_0: d = max|x| / 127 per block of 32, q = round(x / d).
            var out = Data(capacity: count / 32 * 34)
            var block = [UInt8](repeating: 0, count: 34)
            for b in 0..<(count / 32) {
                let v = x + b * 32
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(v[j])) }
                let d = amax / 127, id: Float = d != 0 ? 1 / d : 0
                let dBits = Float16(d).bitPattern
                block[0] = UInt8(dBits & 0xFF); block[1] = UInt8(dBits >> 8)
                for j in 0..<32 { block[2 + j] = UInt8(bitPattern: Int8((v[j] * id).rounded())) }
                out.append(contentsOf: block)
            }
            return out
        default:
            preconditionFailure("GGUFWriter: cannot store \(t.type)")
        }
    }

    // MARK: - Encoding

    private static func append<T: FixedWidthInteger>(_ data: inout Data, _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) }
    }

    private static func appendString(_ data: inout Data, _ s: String) {
        let bytes = Array(s.utf8)
        append(&data, UInt64(bytes.count))
        data.append(contentsOf: bytes)
    }

    /// GGUF's value type ids.
    public static func typeID(_ v: GGUFValue) -> UInt32 {
        switch v {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }

    private static func appendValue(_ data: inout Data, _ v: GGUFValue) {
        switch v {
        case .uint8(let x): append(&data, x)
        case .int8(let x): append(&data, x)
        case .uint16(let x): append(&data, x)
        case .int16(let x): append(&data, x)
        case .uint32(let x): append(&data, x)
        case .int32(let x): append(&data, x)
        case .float32(let x): append(&data, x.bitPattern)
        case .bool(let x): data.append(x ? 1 : 0)
        case .string(let s): appendString(&data, s)
        case .uint64(let x): append(&data, x)
        case .int64(let x): append(&data, x)
        case .float64(let x): append(&data, x.bitPattern)
        case .array(let elements):
            append(&data, elements.first.map(typeID) ?? 8)
            append(&data, UInt64(elements.count))
            for e in elements { appendValue(&data, e) }
        }
    }
}

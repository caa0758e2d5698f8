import DTrainCore
import Foundation

/// Writes float32 tensors as a safetensors file, atomically (temporary file, fsync, rename).
public enum SafetensorsWriter {
    /// One tensor to write: its key, shape and values.
    public struct Tensor {
        public let name: String
        public let shape: [Int]
        public let values: UnsafePointer<Float>
        public init(name: String, shape: [Int], values: UnsafePointer<Float>) {
            self.name = name; self.shape = shape; self.values = values
        }
    }

    /// The element types the writer stores (values are float32 in memory).
    public enum DType: String, Sendable, CaseIterable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16"
        var bytes: Int { self == .f32 ? 4 : 2 }
        /// The name config.json's `torch_dtype` gives it.
        public var torchName: String {
            switch self {
            case .f32: return "float32"
            case .f16: return "float16"
            case .bf16: return "bfloat16"
            }
        }
    }

    public static func write(_ tensors: [Tensor], metadata: [String: String] = [:], dtype: DType = .f32, to path: String) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * dtype.bytes
            header[t.name] = ["dtype": dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so the data starts 8-byte aligned.
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var body = Data(capacity: 8 + json.count + offset)
        var len = UInt64(json.count).littleEndian
        body.append(Data(bytes: &len, count: 8))
        body.append(json)
        for t in tensors {
            let count = t.shape.reduce(1, *), x = t.values
            switch dtype {
            case .f32:
                body.append(Data(bytes: x, count: count * 4))
            case .f16:
                let h = (0..<count).map { Float16(x[$0]).bitPattern.littleEndian }
                h.withUnsafeBytes { body.append(contentsOf: $0) }
            case .bf16:
                // Round to nearest even, as torch's float32 -> bfloat16 conversion does.
                let h = (0..<count).map { i -> UInt16 in
                    let bits = x[i].bitPattern
                    if x[i].isNaN { return UInt16(bits >> 16) | 0x40 }
                    return UInt16((bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16).littleEndian
                }
                h.withUnsafeBytes { body.append(contentsOf: $0) }
            }
        }
        try AtomicFile.write(body, to: path)
    }
}


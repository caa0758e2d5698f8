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

    public static func write(_ tensors: [Tensor], metadata: [String: String] = [:], to path: String) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * 4
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so the data starts 8-byte aligned.
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var body = Data(capacity: 8 + json.count + offset)
        var len = UInt64(json.count).littleEndian
        body.append(Data(bytes: &len, count: 8))
        body.append(json)
        for t in tensors { body.append(Data(bytes: t.values, count: t.shape.reduce(1, *) * 4)) }
        try AtomicFile.write(body, to: path)
    }
}


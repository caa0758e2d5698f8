import DTrainCore
import Foundation

/// Errors reading a safetensors file or a Hugging Face model directory.
public enum SafetensorsError: Error, CustomStringConvertible {
    case cannotOpen(path: String, reason: String)
    case truncated(path: String, expected: Int, actual: Int)
    case badHeader(path: String, reason: String)
    case missingTensor(path: String, name: String)
    case unsupportedDType(path: String, name: String, dtype: String)
    case shapeMismatch(path: String, name: String, expected: [Int], actual: [Int])

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason):
            return "\(path): cannot open (\(reason))"
        case .truncated(let path, let expected, let actual):
            return "\(path): truncated: the header describes \(expected) bytes but the file has \(actual). HINT: re-download the file"
        case .badHeader(let path, let reason):
            return "\(path): not a safetensors file: \(reason)"
        case .missingTensor(let path, let name):
            return "\(path): tensor '\(name)' is missing. HINT: is this a checkpoint of the architecture its config.json names?"
        case .unsupportedDType(let path, let name, let dtype):
            return "\(path): tensor '\(name)' has dtype \(dtype); dtrain reads F32, F16, BF16, I32 and I64"
        case .shapeMismatch(let path, let name, let expected, let actual):
            return "\(path): tensor '\(name)' has shape \(actual), expected \(expected) from config.json"
        }
    }
}

/// One tensor's entry in a safetensors header.
public struct SafetensorsTensorInfo: Sendable {
    public let name: String
    public let dtype: String
    public let shape: [Int]
    /// Byte range inside the data section.
    public let begin: Int, end: Int
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header, then data.
public final class SafetensorsFile {
    public let path: String
    public let tensors: [String: SafetensorsTensorInfo]
    /// The header's `__metadata__` strings.
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        do { data = try FileOperation.read(path) } catch let error as FileError {
            throw SafetensorsError.cannotOpen(path: path, reason: error.cause)
        }
        guard data.count >= 8 else { throw SafetensorsError.badHeader(path: path, reason: "only \(data.count) bytes") }
        let headerLen = data.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard headerLen > 0, headerLen <= data.count - 8 else {
            throw SafetensorsError.badHeader(path: path, reason: "header length \(headerLen) does not fit in \(data.count) bytes")
        }
        dataStart = 8 + headerLen
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<dataStart))
        } catch {
            throw SafetensorsError.badHeader(path: path, reason: "header is not JSON")
        }
        guard let dict = json as? [String: Any] else {
            throw SafetensorsError.badHeader(path: path, reason: "header is not a JSON object")
        }
        var tensors: [String: SafetensorsTensorInfo] = [:]
        var metadata: [String: String] = [:]
        var dataEnd = 0
        for (name, value) in dict {
            if name == "__metadata__" {
                metadata = (value as? [String: String]) ?? [:]
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2
            else { throw SafetensorsError.badHeader(path: path, reason: "entry '\(name)' lacks dtype, shape or data_offsets") }
            tensors[name] = SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
            dataEnd = max(dataEnd, offsets[1])
        }
        if dataStart + dataEnd > data.count {
            throw SafetensorsError.truncated(path: path, expected: dataStart + dataEnd, actual: data.count)
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Bytes per element of a dtype, or nil if dtrain does not read it.
    static func elementSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F32", "I32": return 4
        case "F16", "BF16": return 2
        case "I64": return 8
        default: return nil
        }
    }

    /// Converts tensor `name` to float32 into dst (count floats, which must equal its element count).
    public func read(_ name: String, into dst: UnsafeMutablePointer<Float>, expectedShape: [Int]? = nil) throws {
        guard let info = tensors[name] else { throw SafetensorsError.missingTensor(path: path, name: name) }
        if let expectedShape, expectedShape != info.shape {
            throw SafetensorsError.shapeMismatch(path: path, name: name, expected: expectedShape, actual: info.shape)
        }
        guard let size = Self.elementSize(info.dtype) else {
            throw SafetensorsError.unsupportedDType(path: path, name: name, dtype: info.dtype)
        }
        let n = info.elementCount
        guard info.end - info.begin == n * size else {
            throw SafetensorsError.badHeader(path: path, reason: "tensor '\(name)' spans \(info.end - info.begin) bytes, its shape needs \(n * size)")
        }
        data.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataStart + info.begin
            switch info.dtype {
            case "F32":
                for i in 0..<n { dst[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
            case "F16":
                for i in 0..<n { dst[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case "BF16":
                for i in 0..<n {
                    dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
                }
            case "I32":
                for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
            default: // I64
                for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
            }
        }
    }

    /// Tensor `name` as float32 values.
    public func floats(_ name: String) throws -> [Float] {
        guard let info = tensors[name] else { throw SafetensorsError.missingTensor(path: path, name: name) }
        var out = [Float](repeating: 0, count: info.elementCount)
        try out.withUnsafeMutableBufferPointer { try read(name, into: $0.baseAddress!) }
        return out
    }

    /// Tensor `name` as Int32 values (from I32 or I64 data).
    public func ints(_ name: String) throws -> [Int32] {
        guard let info = tensors[name] else { throw SafetensorsError.missingTensor(path: path, name: name) }
        let n = info.elementCount
        return try data.withUnsafeBytes { raw -> [Int32] in
            let src = raw.baseAddress! + dataStart + info.begin
            switch info.dtype {
            case "I32": return (0..<n).map { src.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self) }
            case "I64": return (0..<n).map { Int32(truncatingIfNeeded: src.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
            default: throw SafetensorsError.unsupportedDType(path: path, name: name, dtype: info.dtype)
            }
        }
    }
}

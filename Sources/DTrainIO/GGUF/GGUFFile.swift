// GGUF reader: a memory-mapped, read-only view of a llama.cpp model file.
//
// Layout (all little-endian; counts and string lengths are 64-bit in v2 and v3):
//   "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x (string key | u32 value_type | value)
//   tensor_count x (string name | u32 n_dims | n_dims x u64 ne | u32 ggml_type | u64 offset)
//   padding to `general.alignment` (default 32) | data section (tensor offsets are relative to it)
// A string is u64 length + UTF-8 bytes (no terminator); an array is u32 element type + u64 count +
// elements.
import Foundation

/// One metadata value of a GGUF file.
public enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case float32(Float)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])
    case uint64(UInt64)
    case int64(Int64)
    case float64(Double)

    /// Any integer type as `Int` (nil for other types, or a `uint64` above `Int.max`).
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// `float32` / `float64` as `Float`; integers are converted too (GGUF writers are not
    /// consistent about which they use for values like `rope.freq_base`).
    public var float: Float? {
        switch self {
        case .float32(let v): return v
        case .float64(let v): return Float(v)
        default: return int.map { Float($0) }
        }
    }

    /// The value of a `string`.
    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The value of a `bool`.
    public var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The elements of an `array`.
    public var array: [GGUFValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// An array whose elements are all strings (e.g. `tokenizer.ggml.tokens`).
    public var stringArray: [String]? {
        guard case .array(let a) = self else { return nil }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for element in a {
            guard case .string(let s) = element else { return nil }
            out.append(s)
        }
        return out
    }

    /// An array whose elements are all integers (e.g. `tokenizer.ggml.token_type`).
    public var intArray: [Int]? {
        guard case .array(let a) = self else { return nil }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for element in a {
            guard let v = element.int else { return nil }
            out.append(v)
        }
        return out
    }

    /// An array whose elements are all numbers (e.g. `tokenizer.ggml.scores`).
    public var floatArray: [Float]? {
        guard case .array(let a) = self else { return nil }
        var out: [Float] = []
        out.reserveCapacity(a.count)
        for element in a {
            guard let v = element.float else { return nil }
            out.append(v)
        }
        return out
    }

    /// GGUF's name for the value's type (`uint32`, `string`, `array`, ...).
    public var typeName: String {
        switch self {
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .uint32: return "uint32"
        case .int32: return "int32"
        case .float32: return "float32"
        case .bool: return "bool"
        case .string: return "string"
        case .array: return "array"
        case .uint64: return "uint64"
        case .int64: return "int64"
        case .float64: return "float64"
        }
    }

    public var description: String {
        switch self {
        case .uint8(let v): return "\(v)"
        case .int8(let v): return "\(v)"
        case .uint16(let v): return "\(v)"
        case .int16(let v): return "\(v)"
        case .uint32(let v): return "\(v)"
        case .int32(let v): return "\(v)"
        case .float32(let v): return "\(v)"
        case .bool(let v): return "\(v)"
        case .string(let s): return s.count > 60 ? "\"\(s.prefix(60))...\"" : "\"\(s)\""
        case .array(let a):
            let head = a.prefix(4).map(\.description).joined(separator: ", ")
            return a.count > 4 ? "[\(head), ... (\(a.count) elements)]" : "[\(head)]"
        case .uint64(let v): return "\(v)"
        case .int64(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        }
    }
}

/// Where one tensor lives in a GGUF file and how it is stored.
public struct GGUFTensorInfo: Sendable, Equatable {
    /// llama.cpp name, e.g. `blk.3.attn_q.weight`.
    public let name: String
    /// Extents in ggml order: `dims[0]` (ne0) is the innermost, fastest-varying one, so a
    /// Hugging Face (out, in) weight has dims [in, out].
    public let dims: [Int]
    /// Element type.
    public let type: GGMLType
    /// Absolute file offset of the first byte.
    public let offset: Int
    /// Product of `dims`.
    public let elementCount: Int
    /// Bytes of data.
    public let byteCount: Int

    /// ne0: elements per row.
    public var rowLength: Int { dims.first ?? 1 }
    /// Rows of `rowLength` elements.
    public var rowCount: Int { rowLength == 0 ? 0 : elementCount / rowLength }
    /// Bytes per row (rows are whole blocks).
    public var rowByteCount: Int { rowLength / type.blockSize * type.typeSize }
}

/// A GGUF file or tensor that cannot be read; every case names the file and says what to do.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened or mapped.
    case cannotOpen(path: String, reason: String)
    /// The file ends before `needed` bytes at `offset` could be read.
    case truncated(path: String, reading: String, offset: Int, needed: Int, fileSize: Int)
    /// The first four bytes are not "GGUF".
    case badMagic(path: String, found: [UInt8])
    /// A version other than 2 or 3 (or a big-endian file).
    case unsupportedVersion(path: String, version: UInt32)
    /// A metadata entry that breaks the format (bad type id, bool byte, duplicate key, ...).
    case invalidMetadata(path: String, key: String, problem: String)
    /// A tensor info that breaks the format (too many dims, misaligned offset, ...).
    case invalidTensorInfo(path: String, tensor: String, problem: String)
    /// A tensor type id this reader does not know.
    case unknownTensorType(path: String, tensor: String, typeID: UInt32)
    /// A known tensor type that cannot be converted to float32.
    case unsupportedTensorType(path: String, tensor: String, type: GGMLType)
    /// No tensor of that name.
    case tensorNotFound(path: String, tensor: String)
    /// The destination size differs from the tensor's element count.
    case countMismatch(path: String, tensor: String, expected: Int, got: Int)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason):
            return "GGUF \(path): cannot open: \(reason). HINT: check the path and permissions " +
                "(launch/fetch-model.sh downloads the demo model)."
        case let .truncated(path, reading, offset, needed, fileSize):
            return "GGUF \(path): file ends while reading \(reading): needed \(needed) bytes at offset " +
                "\(offset), file has \(fileSize). HINT: the file is truncated or corrupt; download it again."
        case let .badMagic(path, found):
            let hex = found.map { String(format: "%02x", $0) }.joined(separator: " ")
            return "GGUF \(path): not a GGUF file: expected magic \"GGUF\" (47 47 55 46), found \(hex). " +
                "HINT: convert the model with llama.cpp's convert_hf_to_gguf.py, or pass a safetensors " +
                "directory instead."
        case let .unsupportedVersion(path, version):
            let swapped = version.byteSwapped
            if swapped == 2 || swapped == 3 {
                return "GGUF \(path): big-endian GGUF v\(swapped) is not supported. HINT: use the " +
                    "little-endian file (llama.cpp writes little-endian unless asked otherwise)."
            }
            return "GGUF \(path): version \(version) is not supported; expected 2 or 3. HINT: " +
                (version == 1 ? "GGUF v1 (32-bit counts) is obsolete; re-convert the model with a current llama.cpp."
                              : "re-convert the model with a current llama.cpp.")
        case let .invalidMetadata(path, key, problem):
            return "GGUF \(path): metadata \"\(key)\": \(problem). HINT: the file is corrupt or written " +
                "by a non-conforming tool; re-convert it with llama.cpp."
        case let .invalidTensorInfo(path, tensor, problem):
            return "GGUF \(path): tensor \"\(tensor)\": \(problem). HINT: the file is corrupt or written " +
                "by a non-conforming tool; re-convert it with llama.cpp."
        case let .unknownTensorType(path, tensor, typeID):
            return "GGUF \(path): tensor \"\(tensor)\" has unknown ggml type id \(typeID) (this reader " +
                "knows ids 0-39). HINT: re-quantize the model to one of " +
                GGMLType.dequantizable.map(\.name).joined(separator: ", ") + "."
        case let .unsupportedTensorType(path, tensor, type):
            return "GGUF \(path): tensor \"\(tensor)\" is stored as \(type), which dtrain cannot " +
                "dequantize; supported: " + GGMLType.dequantizable.map(\.name).joined(separator: ", ") +
                ". HINT: re-quantize with llama-quantize to one of them (q8_0 keeps the most precision)."
        case let .tensorNotFound(path, tensor):
            return "GGUF \(path): no tensor named \"\(tensor)\". HINT: list the names with GGUFFile.tensorNames."
        case let .countMismatch(path, tensor, expected, got):
            return "GGUF \(path): tensor \"\(tensor)\" has \(expected) elements, but the destination " +
                "holds \(got). HINT: size the destination from GGUFTensorInfo.elementCount."
        }
    }
}

/// A GGUF v2/v3 file, memory-mapped read-only for the object's lifetime.
///
/// Opening parses the header, all metadata and all tensor infos, and checks that every tensor's
/// data lies inside the file; tensor data is only touched by `dequantize` / `floats`.
public final class GGUFFile: @unchecked Sendable {
    /// Path as given to `init`.
    public let path: String
    /// Format version (2 or 3).
    public let version: Int
    /// Every metadata entry by key.
    public let metadata: [String: GGUFValue]
    /// Every tensor by llama.cpp name.
    public let tensors: [String: GGUFTensorInfo]
    /// Tensor names in file order.
    public let tensorNames: [String]
    /// Data alignment (`general.alignment`, default 32).
    public let alignment: Int
    /// Absolute file offset of the data section.
    public let dataOffset: Int
    /// File size in bytes.
    public let fileSize: Int

    /// Start of the mapping (nil for an empty file, which never gets this far).
    private let base: UnsafeRawPointer

    /// Opens and parses `path`. Throws `GGUFError`.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno)))
        }
        let size = Int(st.st_size)
        fileSize = size
        guard size >= 4 else {
            throw GGUFError.truncated(path: path, reading: "the magic", offset: 0, needed: 4, fileSize: size)
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0),
              mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw GGUFError.cannotOpen(path: path, reason: "mmap failed: " + String(cString: strerror(errno)))
        }
        base = UnsafeRawPointer(mapped)
        do {
            var parser = GGUFParser(path: path, base: base, size: size)
            let parsed = try parser.parse()
            version = parsed.version
            metadata = parsed.metadata
            tensors = parsed.tensors
            tensorNames = parsed.tensorNames
            alignment = parsed.alignment
            dataOffset = parsed.dataOffset
        } catch {
            munmap(mapped, size)
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), fileSize)
    }

    /// The info of tensor `name`, or `GGUFError.tensorNotFound`.
    public func info(_ name: String) throws -> GGUFTensorInfo {
        guard let info = tensors[name] else { throw GGUFError.tensorNotFound(path: path, tensor: name) }
        return info
    }

    /// The raw bytes of tensor `name` (valid while this object lives).
    public func rawData(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try info(name)
        return UnsafeRawBufferPointer(start: base + info.offset, count: info.byteCount)
    }

    /// Converts tensor `name` to float32 into `dst`, which must hold exactly its element count.
    public func dequantize(_ name: String, into dst: UnsafeMutablePointer<Float>, count: Int) throws {
        let info = try info(name)
        guard count == info.elementCount else {
            throw GGUFError.countMismatch(path: path, tensor: name, expected: info.elementCount, got: count)
        }
        try checkDequantizable(info)
        GGMLQuant.dequantize(info.type, from: base + info.offset, to: dst, count: count)
    }

    /// Tensor `name` as a new float32 array (for small tensors and tests).
    public func floats(_ name: String) throws -> [Float] {
        let info = try info(name)
        try checkDequantizable(info)
        return [Float](unsafeUninitializedCapacity: info.elementCount) { buffer, initialized in
            if let dst = buffer.baseAddress, info.elementCount > 0 {
                GGMLQuant.dequantize(info.type, from: base + info.offset, to: dst, count: info.elementCount)
            }
            initialized = info.elementCount
        }
    }

    /// Converts `rowCount` rows of `info` starting at row `firstRow` into `dst`
    /// (`rowCount * rowLength` floats). Rows are whole blocks, so this needs no temporary.
    func dequantizeRows(_ info: GGUFTensorInfo, firstRow: Int, rowCount: Int, into dst: UnsafeMutablePointer<Float>) throws {
        try checkDequantizable(info)
        precondition(firstRow >= 0 && rowCount >= 0 && firstRow + rowCount <= info.rowCount,
                     "GGUFFile.dequantizeRows: rows \(firstRow)..<\(firstRow + rowCount) outside \(info.rowCount)")
        GGMLQuant.dequantize(info.type, from: base + info.offset + firstRow * info.rowByteCount,
                             to: dst, count: rowCount * info.rowLength)
    }

    private func checkDequantizable(_ info: GGUFTensorInfo) throws {
        guard info.type.canDequantize else {
            throw GGUFError.unsupportedTensorType(path: path, tensor: info.name, type: info.type)
        }
    }
}

// MARK: - Parsing

/// Reads the header, metadata and tensor infos from a mapped file, bounds-checking every read.
struct GGUFParser {
    let path: String
    let base: UnsafeRawPointer
    let size: Int
    var pos = 0

    /// Deepest nesting of arrays accepted (guards the stack against hostile files).
    static let maxArrayDepth = 8
    /// ggml's GGML_MAX_DIMS.
    static let maxDims = 4

    init(path: String, base: UnsafeRawPointer, size: Int) {
        self.path = path
        self.base = base
        self.size = size
    }

    struct Parsed {
        var version: Int
        var metadata: [String: GGUFValue]
        var tensors: [String: GGUFTensorInfo]
        var tensorNames: [String]
        var alignment: Int
        var dataOffset: Int
    }

    mutating func parse() throws -> Parsed {
        // Header.
        try need(4, "the magic")
        let magic = [UInt8](UnsafeRawBufferPointer(start: base, count: 4))
        guard magic == [0x47, 0x47, 0x55, 0x46] else { throw GGUFError.badMagic(path: path, found: magic) }
        pos = 4
        let version = try u32("the version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(path: path, version: version) }
        let tensorCount = try count("the tensor count", minBytesEach: 24)
        let kvCount = try count("the metadata count", minBytesEach: 13)

        // Metadata.
        var metadata: [String: GGUFValue] = [:]
        metadata.reserveCapacity(kvCount)
        for i in 0..<kvCount {
            let key = try string("the key of metadata entry \(i)")
            let typeID = try u32("the type of \"\(key)\"")
            let value = try value(typeID: typeID, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw GGUFError.invalidMetadata(path: path, key: key, problem: "the key appears twice")
            }
        }

        var alignment = 32
        if let value = metadata["general.alignment"] {
            guard let a = value.int, a > 0, a & (a - 1) == 0 else {
                throw GGUFError.invalidMetadata(path: path, key: "general.alignment",
                                                problem: "expected a power-of-two integer, found \(value.typeName) \(value)")
            }
            alignment = a
        }

        // Tensor infos (offsets relative to the data section for now).
        var raw: [(name: String, dims: [Int], type: GGMLType, relOffset: Int, elements: Int)] = []
        raw.reserveCapacity(tensorCount)
        var seen = Set<String>()
        for i in 0..<tensorCount {
            let name = try string("the name of tensor \(i)")
            guard seen.insert(name).inserted else {
                throw GGUFError.invalidTensorInfo(path: path, tensor: name, problem: "the name appears twice")
            }
            let nDims = Int(try u32("the dimension count of tensor \"\(name)\""))
            guard nDims <= Self.maxDims else {
                throw GGUFError.invalidTensorInfo(path: path, tensor: name,
                                                  problem: "\(nDims) dimensions; ggml allows at most \(Self.maxDims)")
            }
            var dims: [Int] = []
            var elements = 1
            for d in 0..<nDims {
                let extent = try u64("dimension \(d) of tensor \"\(name)\"")
                guard let e = Int(exactly: extent) else {
                    throw GGUFError.invalidTensorInfo(path: path, tensor: name, problem: "dimension \(d) is \(extent)")
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: e)
                guard !overflow else {
                    throw GGUFError.invalidTensorInfo(path: path, tensor: name, problem: "element count overflows")
                }
                dims.append(e)
                elements = product
            }
            let typeID = try u32("the type of tensor \"\(name)\"")
            guard let type = GGMLType(rawValue: typeID) else {
                throw GGUFError.unknownTensorType(path: path, tensor: name, typeID: typeID)
            }
            guard (dims.first ?? 1) % type.blockSize == 0 else {
                throw GGUFError.invalidTensorInfo(path: path, tensor: name,
                                                  problem: "ne0 = \(dims.first ?? 1) is not a multiple of \(type)'s block size \(type.blockSize)")
            }
            let offset = try u64("the offset of tensor \"\(name)\"")
            guard let rel = Int(exactly: offset), rel % alignment == 0 else {
                throw GGUFError.invalidTensorInfo(path: path, tensor: name,
                                                  problem: "data offset \(offset) is not a multiple of the alignment \(alignment)")
            }
            raw.append((name, dims, type, rel, elements))
        }

        // Data section: tensor infos end, padded to the alignment.
        let dataOffset = (pos + alignment - 1) / alignment * alignment
        var tensors: [String: GGUFTensorInfo] = [:]
        tensors.reserveCapacity(raw.count)
        for t in raw {
            let byteCount = t.elements / t.type.blockSize * t.type.typeSize
            let (start, o1) = dataOffset.addingReportingOverflow(t.relOffset)
            let (end, o2) = start.addingReportingOverflow(byteCount)
            guard !o1, !o2, end <= size else {
                throw GGUFError.truncated(path: path, reading: "the data of tensor \"\(t.name)\"",
                                          offset: start, needed: byteCount, fileSize: size)
            }
            tensors[t.name] = GGUFTensorInfo(name: t.name, dims: t.dims, type: t.type, offset: start,
                                             elementCount: t.elements, byteCount: byteCount)
        }
        return Parsed(version: Int(version), metadata: metadata, tensors: tensors,
                      tensorNames: raw.map(\.name), alignment: alignment, dataOffset: dataOffset)
    }

    // MARK: Values

    mutating func value(typeID: UInt32, key: @autoclosure () -> String, depth: Int) throws -> GGUFValue {
        switch typeID {
        case 0: return .uint8(try u8(key()))
        case 1: return .int8(Int8(bitPattern: try u8(key())))
        case 2: return .uint16(try u16(key()))
        case 3: return .int16(Int16(bitPattern: try u16(key())))
        case 4: return .uint32(try u32(key()))
        case 5: return .int32(Int32(bitPattern: try u32(key())))
        case 6: return .float32(Float(bitPattern: try u32(key())))
        case 7: return .bool(try bool(key()))
        case 8: return .string(try string(key()))
        case 9: return .array(try array(key: key(), depth: depth))
        case 10: return .uint64(try u64(key()))
        case 11: return .int64(Int64(bitPattern: try u64(key())))
        case 12: return .float64(Double(bitPattern: try u64(key())))
        default:
            throw GGUFError.invalidMetadata(path: path, key: key(), problem: "unknown value type id \(typeID) (valid: 0-12)")
        }
    }

    /// Bytes of the smallest value of a type (for rejecting absurd array counts early).
    static func minSize(typeID: UInt32) -> Int? {
        switch typeID {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 8: return 8
        case 9: return 12
        case 10, 11, 12: return 8
        default: return nil
        }
    }

    mutating func array(key: String, depth: Int) throws -> [GGUFValue] {
        guard depth < Self.maxArrayDepth else {
            throw GGUFError.invalidMetadata(path: path, key: key, problem: "arrays nested deeper than \(Self.maxArrayDepth)")
        }
        let elementType = try u32("the element type of \"\(key)\"")
        guard let minSize = Self.minSize(typeID: elementType) else {
            throw GGUFError.invalidMetadata(path: path, key: key, problem: "unknown array element type id \(elementType) (valid: 0-12)")
        }
        let n = try count("the length of \"\(key)\"", minBytesEach: minSize)
        var out: [GGUFValue] = []
        out.reserveCapacity(n)
        // Tight loops for the common big arrays (tokens, merges, scores, token types).
        switch elementType {
        case 8:
            for _ in 0..<n { out.append(.string(try string("an element of \"\(key)\""))) }
        case 5:
            try need(4 * n, "the elements of \"\(key)\"")
            for i in 0..<n {
                out.append(.int32(Int32(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: pos + 4 * i, as: UInt32.self)))))
            }
            pos += 4 * n
        case 6:
            try need(4 * n, "the elements of \"\(key)\"")
            for i in 0..<n {
                out.append(.float32(Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: pos + 4 * i, as: UInt32.self)))))
            }
            pos += 4 * n
        default:
            for _ in 0..<n { out.append(try value(typeID: elementType, key: "an element of \"\(key)\"", depth: depth + 1)) }
        }
        return out
    }

    // MARK: Primitives

    /// Throws `truncated` unless `n` more bytes are available.
    @inline(__always)
    func need(_ n: Int, _ what: @autoclosure () -> String) throws {
        guard n >= 0, n <= size - pos else {
            throw GGUFError.truncated(path: path, reading: what(), offset: pos, needed: n, fileSize: size)
        }
    }

    mutating func u8(_ what: @autoclosure () -> String) throws -> UInt8 {
        try need(1, what())
        let v = base.load(fromByteOffset: pos, as: UInt8.self)
        pos += 1
        return v
    }

    mutating func u16(_ what: @autoclosure () -> String) throws -> UInt16 {
        try need(2, what())
        let v = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: UInt16.self))
        pos += 2
        return v
    }

    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 {
        try need(4, what())
        let v = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: UInt32.self))
        pos += 4
        return v
    }

    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 {
        try need(8, what())
        let v = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: UInt64.self))
        pos += 8
        return v
    }

    mutating func bool(_ what: @autoclosure () -> String) throws -> Bool {
        let b = try u8(what())
        guard b <= 1 else {
            throw GGUFError.invalidMetadata(path: path, key: what(), problem: "bool byte is \(b); expected 0 or 1")
        }
        return b == 1
    }

    /// A u64 count that must fit in the rest of the file at `minBytesEach` bytes per item.
    mutating func count(_ what: @autoclosure () -> String, minBytesEach: Int) throws -> Int {
        let start = pos
        let n = try u64(what())
        let remaining = size - pos
        guard n <= UInt64(remaining / max(minBytesEach, 1)) else {
            throw GGUFError.truncated(path: path, reading: what() + " (\(n) items)", offset: start,
                                      needed: Int(clamping: n.multipliedReportingOverflow(by: UInt64(minBytesEach)).partialValue),
                                      fileSize: size)
        }
        return Int(n)
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let length = try u64(what())
        guard length <= UInt64(size - pos) else {
            throw GGUFError.truncated(path: path, reading: what(), offset: pos, needed: Int(clamping: length), fileSize: size)
        }
        let n = Int(length)
        let s = String(decoding: UnsafeRawBufferPointer(start: base + pos, count: n), as: UTF8.self)
        pos += n
        return s
    }
}

// TensorBoard event files, written without TensorFlow or a protobuf library.
//
// An event file is a TFRecord stream: each record is
//     uint64 length | uint32 masked CRC-32C of those 8 bytes | payload | uint32 masked CRC-32C of payload
// (all little-endian), and each payload is one serialized `tensorflow.Event` message. The first
// event carries only `file_version`; each scalar is an event whose `summary` holds one value.
// The messages' fields used here (numbers from event.proto and summary.proto):
//     Event         { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
//                     SessionLog session_log = 7; }
//     Summary       { repeated Value value = 1; }
//     Summary.Value { string tag = 1; float simple_value = 2; }
//     SessionLog    { SessionStatus status = 1; }   (enum SessionStatus: START = 1)
import Foundation

// MARK: - CRC-32C

/// CRC-32C (the Castagnoli polynomial, as used by TFRecord framing), one table lookup per byte.
public enum CRC32C {
    /// 0x1EDC6F41 with its bits reversed: the polynomial for the LSB-first (reflected) algorithm.
    static let reflectedPolynomial: UInt32 = 0x82F6_3B78

    /// `table[b]` is the CRC register after shifting byte `b` through an all-zero register.
    static let table: [UInt32] = (0..<256).map { byte -> UInt32 in
        var register = UInt32(byte)
        for _ in 0..<8 {
            register = (register & 1) != 0 ? (register >> 1) ^ reflectedPolynomial : register >> 1
        }
        return register
    }

    /// The CRC-32C of `bytes` (initial value and final xor 0xFFFFFFFF), e.g. 0xE3069283 for "123456789".
    public static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var register: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            register = table[Int((register ^ UInt32(byte)) & 0xFF)] ^ (register >> 8)
        }
        return ~register
    }

    /// TFRecord's masking of a stored CRC: rotate right by 15 bits, then add a constant, so that a
    /// CRC computed over data that itself contains CRCs does not degenerate.
    public static func mask(_ crc: UInt32) -> UInt32 {
        ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }

    /// The masked CRC-32C of `bytes`, as stored in TFRecord framing.
    public static func maskedChecksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        mask(checksum(bytes))
    }
}

// MARK: - Protobuf wire format

/// Appends protobuf wire-format fields to a byte array: only the scalar kinds events need.
struct ProtobufEncoder {
    /// The low three bits of a field key.
    enum WireType: UInt64 {
        case varint = 0, fixed64 = 1, lengthDelimited = 2, fixed32 = 5
    }

    private(set) var bytes: [UInt8] = []

    /// Base-128 little-endian groups, high bit set on every byte but the last.
    mutating func appendVarint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    /// A field key: `field << 3 | wireType`.
    mutating func appendKey(_ field: Int, _ wireType: WireType) {
        appendVarint(UInt64(field) << 3 | wireType.rawValue)
    }

    /// `double`: fixed64, the IEEE-754 bits little-endian.
    mutating func appendDouble(_ field: Int, _ value: Double) {
        appendKey(field, .fixed64)
        appendLittleEndian(value.bitPattern)
    }

    /// `float`: fixed32, the IEEE-754 bits little-endian.
    mutating func appendFloat(_ field: Int, _ value: Float) {
        appendKey(field, .fixed32)
        appendLittleEndian(value.bitPattern)
    }

    /// `int64`: a varint of the two's-complement bits (negative values take ten bytes).
    mutating func appendInt64(_ field: Int, _ value: Int64) {
        appendKey(field, .varint)
        appendVarint(UInt64(bitPattern: value))
    }

    /// `bytes` or an embedded message: length varint, then the bytes.
    mutating func appendBytes(_ field: Int, _ payload: [UInt8]) {
        appendKey(field, .lengthDelimited)
        appendVarint(UInt64(payload.count))
        bytes.append(contentsOf: payload)
    }

    /// `string`: UTF-8, length-delimited.
    mutating func appendString(_ field: Int, _ value: String) {
        appendBytes(field, Array(value.utf8))
    }

    private mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Field numbers of the TensorBoard messages written here.
enum EventProto {
    enum Event { static let wallTime = 1, step = 2, fileVersion = 3, summary = 5, sessionLog = 7 }
    enum Summary { static let value = 1 }
    enum SummaryValue { static let tag = 1, simpleValue = 2 }
    enum SessionLog { static let status = 1, statusStart: UInt64 = 1 }

    /// The version string TensorBoard expects in a file's first event.
    static let fileVersion = "brain.Event:2"

    /// A serialized Event holding only `wall_time` and `file_version`.
    static func fileVersionEvent(wallTime: Double) -> [UInt8] {
        var event = ProtobufEncoder()
        event.appendDouble(Event.wallTime, wallTime)
        event.appendString(Event.fileVersion, fileVersion)
        return event.bytes
    }

    /// A serialized Event holding one scalar summary value. Step 0 is left out, as proto3 leaves
    /// out default values; readers decode the missing field as 0.
    static func scalarEvent(tag: String, value: Float, step: Int64, wallTime: Double) -> [UInt8] {
        var summaryValue = ProtobufEncoder()
        summaryValue.appendString(SummaryValue.tag, tag)
        summaryValue.appendFloat(SummaryValue.simpleValue, value)
        var summary = ProtobufEncoder()
        summary.appendBytes(Summary.value, summaryValue.bytes)
        var event = ProtobufEncoder()
        event.appendDouble(Event.wallTime, wallTime)
        if step != 0 { event.appendInt64(Event.step, step) }
        event.appendBytes(Event.summary, summary.bytes)
        return event.bytes
    }

    /// A serialized Event holding a `SessionLog` with status START at `step`: TensorBoard then
    /// discards the events read before it whose step is `step` or later.
    static func sessionStartEvent(step: Int64, wallTime: Double) -> [UInt8] {
        var sessionLog = ProtobufEncoder()
        sessionLog.appendKey(SessionLog.status, .varint)
        sessionLog.appendVarint(SessionLog.statusStart)
        var event = ProtobufEncoder()
        event.appendDouble(Event.wallTime, wallTime)
        if step != 0 { event.appendInt64(Event.step, step) }
        event.appendBytes(Event.sessionLog, sessionLog.bytes)
        return event.bytes
    }
}

// MARK: - TFRecord framing

/// TFRecord framing: each record carries its length and masked CRC-32Cs of length and payload.
enum TFRecord {
    /// One framed record: length, its masked CRC, the payload, the payload's masked CRC.
    static func frame(_ payload: [UInt8]) -> [UInt8] {
        var record: [UInt8] = []
        record.reserveCapacity(payload.count + 16)
        let length = withUnsafeBytes(of: UInt64(payload.count).littleEndian) { Array($0) }
        record.append(contentsOf: length)
        withUnsafeBytes(of: CRC32C.maskedChecksum(length).littleEndian) { record.append(contentsOf: $0) }
        record.append(contentsOf: payload)
        withUnsafeBytes(of: CRC32C.maskedChecksum(payload).littleEndian) { record.append(contentsOf: $0) }
        return record
    }
}

// MARK: - The writer

/// Writes scalars to a TensorBoard event file, `events.out.tfevents.<unix seconds>.<hostname>`.
///
/// Records are gathered in memory and handed to the kernel by `flush()` (or once 64 KiB have
/// gathered), so a step's few scalars cost one `write(2)`. `MetricsLog` flushes after each step.
/// A write failure is reported once on standard error and disables the writer: losing a chart is
/// not worth stopping a training run. Use from one thread (rank 0's training loop).
public final class TensorBoardWriter {
    /// The event file being written.
    public let fileURL: URL

    private let file: AppendOnlyFile
    private var pending: [UInt8] = []
    private var failed = false
    private static let flushThreshold = 64 * 1024

    /// Creates `directory` if needed and starts a new event file in it, beginning with the
    /// `file_version` event. If a file of that name exists (two writers in one second), a numeric
    /// suffix is added.
    public init(directory: URL) throws {
        try ensureDirectory(directory)
        let wallTime = Date().timeIntervalSince1970
        let base = "events.out.tfevents.\(Int(wallTime)).\(TensorBoardWriter.hostname())"
        (file, fileURL) = try TensorBoardWriter.createEventFile(named: base, in: directory)
        pending = TFRecord.frame(EventProto.fileVersionEvent(wallTime: wallTime))
        try file.append(pending)
        pending.removeAll(keepingCapacity: true)
    }

    deinit { close() }

    /// Queues one scalar. `value` is stored as a 32-bit float (TensorBoard's `simple_value`);
    /// `wallTime` defaults to now, in seconds since 1970.
    public func scalar(_ tag: String, _ value: Double, step: Int, wallTime: Double? = nil) {
        guard !failed, file.isOpen else { return }
        let event = EventProto.scalarEvent(tag: tag, value: Float(value), step: Int64(step),
                                           wallTime: wallTime ?? Date().timeIntervalSince1970)
        pending.append(contentsOf: TFRecord.frame(event))
        if pending.count >= TensorBoardWriter.flushThreshold { flush() }
    }

    /// Marks the start of a training session whose first step is `step` (a `SessionLog` START
    /// event). TensorBoard takes every such mark in a run directory after the first as a restart,
    /// and discards the scalars read before it (from this directory's older event files) whose step
    /// is `step` or later: the steps an interrupted run logged after its last checkpoint, which the
    /// resumed run logs again. `MetricsLog` writes the mark when it opens: at step 0 for a fresh
    /// run, at the resume step + 1 when appending.
    public func markSessionStart(atStep step: Int, wallTime: Double? = nil) {
        guard !failed, file.isOpen else { return }
        let event = EventProto.sessionStartEvent(step: Int64(step), wallTime: wallTime ?? Date().timeIntervalSince1970)
        pending.append(contentsOf: TFRecord.frame(event))
        flush()
    }

    /// Hands the queued records to the kernel.
    public func flush() {
        guard !pending.isEmpty else { return }
        defer { pending.removeAll(keepingCapacity: true) }
        guard !failed else { return }
        do {
            try file.append(pending)
        } catch {
            failed = true
            printError("warning: TensorBoard logging stopped: \(error)")
        }
    }

    /// Flushes and closes the file; later scalars are ignored. Safe to call twice.
    public func close() {
        flush()
        file.closeFile()
    }

    /// Opens `name` exclusively in `directory`, or `name.1`, `name.2`, ... if taken.
    private static func createEventFile(named name: String, in directory: URL) throws -> (AppendOnlyFile, URL) {
        var suffix = 0
        while true {
            let url = directory.appendingPathComponent(suffix == 0 ? name : "\(name).\(suffix)")
            do {
                return (try AppendOnlyFile(path: url.path, exclusive: true), url)
            } catch LoggingError.cannotOpen(_, let code) where code == EEXIST && suffix < 1000 {
                suffix += 1
            }
        }
    }

    /// This machine's name, as `hostname(1)` prints it; "localhost" if it cannot be read.
    static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return name.isEmpty ? "localhost" : name
    }
}

// Tests of the run logger: CRC-32C, TensorBoard event files, metrics.jsonl and the console line.
//
// Event files are read back by a TFRecord reader and protobuf decoder written here, separately
// from the writer, and the framing is compared byte for byte with records produced by
// TensorBoard's own Python `RecordWriter` (hex below), so the writer is checked against the format
// and not against itself.
@testable import DTrainTrainer
import DTrainTestSupport
import Foundation
import Testing

// MARK: - Helpers

/// A fresh, empty directory under the system's temporary directory.
private func temporaryDirectory(_ label: String) throws -> URL {
    try TestScratch.directory("log-\(label)")
}

private func bytes(fromHex hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        out.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return out
}

private struct DecodeError: Error, CustomStringConvertible {
    let description: String
}

/// Little-endian unsigned integer from `count` bytes at `offset`.
private func littleEndian(_ bytes: [UInt8], at offset: Int, count: Int) -> UInt64 {
    var value: UInt64 = 0
    for i in (0..<count).reversed() { value = value << 8 | UInt64(bytes[offset + i]) }
    return value
}

/// Splits a TFRecord stream into payloads, checking both masked CRCs of every record.
private func readRecords(_ file: [UInt8]) throws -> [[UInt8]] {
    var records: [[UInt8]] = []
    var offset = 0
    while offset < file.count {
        guard offset + 12 <= file.count else { throw DecodeError(description: "truncated header at \(offset)") }
        let length = Int(littleEndian(file, at: offset, count: 8))
        let lengthCRC = UInt32(littleEndian(file, at: offset + 8, count: 4))
        guard lengthCRC == CRC32C.mask(CRC32C.checksum(file[offset..<offset + 8])) else {
            throw DecodeError(description: "length CRC mismatch at \(offset)")
        }
        let start = offset + 12
        guard start + length + 4 <= file.count else { throw DecodeError(description: "truncated record at \(offset)") }
        let payload = Array(file[start..<start + length])
        let dataCRC = UInt32(littleEndian(file, at: start + length, count: 4))
        guard dataCRC == CRC32C.mask(CRC32C.checksum(payload)) else {
            throw DecodeError(description: "data CRC mismatch at \(offset)")
        }
        records.append(payload)
        offset = start + length + 4
    }
    return records
}

/// Reads protobuf wire-format fields one at a time.
private struct ProtoReader {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { position >= bytes.count }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.count, shift < 64 else { throw DecodeError(description: "bad varint") }
            let byte = bytes[position]
            position += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
    }

    mutating func fixed(_ count: Int) throws -> UInt64 {
        guard position + count <= bytes.count else { throw DecodeError(description: "truncated fixed field") }
        defer { position += count }
        return littleEndian(bytes, at: position, count: count)
    }

    mutating func lengthDelimited() throws -> [UInt8] {
        let length = Int(try varint())
        guard position + length <= bytes.count else { throw DecodeError(description: "truncated bytes field") }
        defer { position += length }
        return Array(bytes[position..<position + length])
    }

    /// The next field's number and wire type.
    mutating func key() throws -> (field: Int, wireType: Int) {
        let key = try varint()
        return (Int(key >> 3), Int(key & 7))
    }

    mutating func skip(wireType: Int) throws {
        switch wireType {
        case 0: _ = try varint()
        case 1: _ = try fixed(8)
        case 2: _ = try lengthDelimited()
        case 5: _ = try fixed(4)
        default: throw DecodeError(description: "unsupported wire type \(wireType)")
        }
    }
}

/// The parts of a `tensorflow.Event` the writer produces.
private struct DecodedEvent {
    var wallTime = 0.0
    var step: Int64 = 0
    var fileVersion: String?
    /// `session_log.status` (1 = START), if the event has a session log.
    var sessionStatus: UInt64?
    var values: [(tag: String, value: Float)] = []

    init(_ payload: [UInt8]) throws {
        var event = ProtoReader(payload)
        while !event.atEnd {
            let (field, wireType) = try event.key()
            switch (field, wireType) {
            case (1, 1): wallTime = Double(bitPattern: try event.fixed(8))
            case (2, 0): step = Int64(bitPattern: try event.varint())
            case (3, 2): fileVersion = String(decoding: try event.lengthDelimited(), as: UTF8.self)
            case (7, 2):
                var sessionLog = ProtoReader(try event.lengthDelimited())
                sessionStatus = 0
                while !sessionLog.atEnd {
                    let (logField, logWire) = try sessionLog.key()
                    if logField == 1, logWire == 0 { sessionStatus = try sessionLog.varint() } else { try sessionLog.skip(wireType: logWire) }
                }
            case (5, 2):
                var summary = ProtoReader(try event.lengthDelimited())
                while !summary.atEnd {
                    let (summaryField, summaryWire) = try summary.key()
                    guard summaryField == 1, summaryWire == 2 else { try summary.skip(wireType: summaryWire); continue }
                    var value = ProtoReader(try summary.lengthDelimited())
                    var tag = "", number = Float.nan
                    while !value.atEnd {
                        let (valueField, valueWire) = try value.key()
                        switch (valueField, valueWire) {
                        case (1, 2): tag = String(decoding: try value.lengthDelimited(), as: UTF8.self)
                        case (2, 5): number = Float(bitPattern: UInt32(try value.fixed(4)))
                        default: try value.skip(wireType: valueWire)
                        }
                    }
                    values.append((tag, number))
                }
            default: try event.skip(wireType: wireType)
            }
        }
    }
}

/// The event files in `directory`, decoded.
private func readEventFiles(in directory: URL) throws -> [(name: String, events: [DecodedEvent])] {
    let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        .filter { $0.hasPrefix("events.out.tfevents.") }.sorted()
    return try names.map { name in
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        return (name, try readRecords(Array(data)).map(DecodedEvent.init))
    }
}

/// The scalars of decoded events as `tag@step=value` strings, in file order.
private func scalarSummary(_ events: [DecodedEvent]) -> [String] {
    events.flatMap { event in event.values.map { "\($0.tag)@\(event.step)=\($0.value)" } }
}

// MARK: - CRC-32C

@Suite struct CRC32CTests {
    /// Check values from RFC 3720 (iSCSI), appendix B.4, and the usual "123456789" check.
    @Test func knownVectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
    }

    /// TFRecord's mask: rotate right 15, add 0xa282ead8 (wrapping).
    @Test func masking() {
        #expect(CRC32C.mask(0x1234_5678) == 0x4F73_0F40)
        #expect(CRC32C.mask(0xFFFF_FFFF) == 0xA282_EAD7)  // the addition wraps
        // TensorBoard's masked_crc32c(b"123456789").
        #expect(CRC32C.maskedChecksum(Array("123456789".utf8)) == 0xC78A_B0E5)
    }
}

// MARK: - TensorBoard event files

@Suite struct TensorBoardWriterTests {
    /// A file_version event (wall time 1700000000.5) and a `train/loss` = 2.1345 scalar at step 120
    /// (wall time 1700000001.25), as framed by `tensorboard.summary.writer.record_writer.RecordWriter`
    /// from `event_pb2.Event(...).SerializeToString()` (TensorBoard 2.21).
    static let tensorBoardBytes =
        "1800000000000000a37f4b220900002040fc54d9411a0d627261696e2e4576656e743a322b353110" +
        "200000000000000029eda9500900005040fc54d94110782a130a110a0a747261696e2f6c6f737315" +
        "a69b08409fb8f965"

    @Test func encodingMatchesTensorBoardsOwnWriter() {
        let ours = TFRecord.frame(EventProto.fileVersionEvent(wallTime: 1_700_000_000.5))
            + TFRecord.frame(EventProto.scalarEvent(tag: "train/loss", value: 2.1345, step: 120, wallTime: 1_700_000_001.25))
        #expect(ours == bytes(fromHex: TensorBoardWriterTests.tensorBoardBytes))
    }

    /// `Event(wall_time=1700000002.0, step=6, session_log=SessionLog(status=START))`, framed by
    /// TensorBoard's `RecordWriter`.
    @Test func sessionStartMatchesTensorBoardsOwnWriter() {
        let ours = TFRecord.frame(EventProto.sessionStartEvent(step: 6, wallTime: 1_700_000_002))
        #expect(ours == bytes(fromHex: "0f000000000000006d532b090900008040fc54d94110063a020801b37124dd"))
    }

    @Test func varints() {
        func encoded(_ value: UInt64) -> [UInt8] {
            var encoder = ProtobufEncoder()
            encoder.appendVarint(value)
            return encoder.bytes
        }
        #expect(encoded(0) == [0x00])
        #expect(encoded(1) == [0x01])
        #expect(encoded(127) == [0x7F])
        #expect(encoded(128) == [0x80, 0x01])
        #expect(encoded(300) == [0xAC, 0x02])
        #expect(encoded(UInt64.max) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
    }

    @Test func scalarsRoundTrip() throws {
        let directory = try temporaryDirectory("tb")
        defer { try? FileManager.default.removeItem(at: directory) }
        let before = Date().timeIntervalSince1970
        let writer = try TensorBoardWriter(directory: directory)
        writer.scalar("train/loss", 2.1345, step: 1)
        writer.scalar("train/lr", 2.9e-4, step: 1, wallTime: 1_700_000_000.25)
        writer.scalar("train/loss", 1.5, step: 0)
        writer.scalar("train/loss", -3.75, step: 1 << 40)
        writer.scalar("val/ppl", 7.7, step: -2)
        writer.scalar("tag with ünïcode/and spaces", 1e30, step: 300)
        writer.close()
        writer.scalar("after/close", 1, step: 1)  // ignored
        writer.close()

        let files = try readEventFiles(in: directory)
        try #require(files.count == 1)
        let hostPart = files[0].name.split(separator: ".", maxSplits: 4).map(String.init)
        #expect(hostPart.count == 5 && hostPart[0...2] == ["events", "out", "tfevents"])
        #expect(Double(hostPart[3]).map { abs($0 - before) < 5 } == true)
        #expect(hostPart[4] == TensorBoardWriter.hostname())
        #expect(writer.fileURL.lastPathComponent == files[0].name)

        let events = files[0].events
        try #require(events.count == 7)
        #expect(events[0].fileVersion == "brain.Event:2")
        #expect(events[0].values.isEmpty)
        #expect(abs(events[0].wallTime - before) < 5)
        #expect(events[2].wallTime == 1_700_000_000.25)
        #expect(events.dropFirst().allSatisfy { $0.fileVersion == nil })
        #expect(scalarSummary(Array(events.dropFirst())) == [
            "train/loss@1=\(Float(2.1345))",
            "train/lr@1=\(Float(2.9e-4))",
            "train/loss@0=1.5",
            "train/loss@\(1 << 40)=-3.75",
            "val/ppl@-2=\(Float(7.7))",
            "tag with ünïcode/and spaces@300=\(Float(1e30))",
        ])
    }

    /// Two writers started in the same second get distinct files.
    @Test func sameSecondFilesDoNotCollide() throws {
        let directory = try temporaryDirectory("tb2")
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try TensorBoardWriter(directory: directory)
        let second = try TensorBoardWriter(directory: directory)
        first.scalar("a", 1, step: 1)
        second.scalar("b", 2, step: 1)
        first.close()
        second.close()
        #expect(first.fileURL != second.fileURL)
        let files = try readEventFiles(in: directory)
        #expect(files.count == 2)
        #expect(Set(files.flatMap { scalarSummary($0.events) }) == ["a@1=1.0", "b@1=2.0"])
    }

    @Test func unwritableDirectoryIsATypedError() {
        #expect(throws: LoggingError.self) {
            _ = try TensorBoardWriter(directory: URL(fileURLWithPath: "/proc/dtrain-no-such-dir"))
        }
    }
}

// MARK: - metrics.jsonl

@Suite struct MetricsLogTests {
    private func lines(of url: URL) throws -> [String] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init)
    }

    private func object(_ line: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test func linesHaveTheDocumentedKeys() throws {
        let directory = try temporaryDirectory("metrics")
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = try MetricsLog(directory: directory)
        log.step(step: 120, loss: 2.1345, lr: 2.9e-4, gradNorm: 0.81, tokensPerSecond: 1120,
                 extra: ["tokens": 122_880, "elapsed_s": 110.5, "loss": 99])
        log.validation(step: 120, valLoss: 2.0412, valPerplexity: 7.7004)
        log.step(step: 121, loss: .nan, lr: 1e-5, gradNorm: .infinity, tokensPerSecond: 1119.5)

        // Written through: readable before close.
        let text = try lines(of: log.fileURL)
        #expect(log.fileURL.lastPathComponent == "metrics.jsonl")
        #expect(text == [
            #"{"kind":"train","step":120,"loss":2.1345,"lr":0.00029,"grad_norm":0.81,"tokens_per_s":1120,"elapsed_s":110.5,"tokens":122880}"#,
            #"{"kind":"val","step":120,"val_loss":2.0412,"val_ppl":7.7004}"#,
            #"{"kind":"train","step":121,"loss":null,"lr":1e-05,"grad_norm":null,"tokens_per_s":1119.5}"#,
            "",
        ])
        // Every line is strict JSON with the values intact.
        let train = try object(text[0])
        #expect(train["step"] as? Int == 120)
        #expect(train["loss"] as? Double == 2.1345)
        #expect(train["lr"] as? Double == 2.9e-4)
        #expect(train["grad_norm"] as? Double == 0.81)
        #expect((train["tokens_per_s"] as? NSNumber)?.doubleValue == 1120)
        #expect((train["tokens"] as? NSNumber)?.doubleValue == 122_880)
        #expect(train["elapsed_s"] as? Double == 110.5)
        let validation = try object(text[1])
        #expect(validation["val_loss"] as? Double == 2.0412)
        #expect(validation["val_ppl"] as? Double == 7.7004)
        #expect(try object(text[2])["loss"] is NSNull)
        log.close()
    }

    @Test func forwardsScalarsToTensorBoard() throws {
        let directory = try temporaryDirectory("metrics-tb")
        defer { try? FileManager.default.removeItem(at: directory) }
        let tensorBoard = try TensorBoardWriter(directory: directory)
        let log = try MetricsLog(directory: directory, tensorBoard: tensorBoard)
        log.step(step: 10, loss: 2.5, lr: 0.001, gradNorm: 0.5, tokensPerSecond: 1000, extra: ["tokens": 4096])
        log.validation(step: 10, valLoss: 2.25, valPerplexity: 9.5)

        // Flushed per call: the event file is complete before anything is closed.
        let files = try readEventFiles(in: directory)
        try #require(files.count == 1)
        #expect(files[0].events.filter { $0.sessionStatus == 1 }.map(\.step) == [0])
        #expect(scalarSummary(files[0].events) == [
            "train/loss@10=2.5", "train/lr@10=\(Float(0.001))", "train/grad_norm@10=0.5",
            "train/tokens_per_s@10=1000.0", "train/tokens@10=4096.0",
            "val/loss@10=2.25", "val/ppl@10=9.5",
        ])
        log.close()
        tensorBoard.close()
    }

    /// Logs steps `range` of a deterministic run, with validation every 5 steps.
    private func logRun(_ log: MetricsLog, steps range: ClosedRange<Int>) {
        for step in range {
            let s = Double(step)
            log.step(step: step, loss: 3 - 0.1 * s, lr: 1e-4 * s, gradNorm: 1 / s, tokensPerSecond: 1000 + s,
                     extra: ["tokens": 512 * s, "elapsed_s": 0.9 * s])
            if step % 5 == 0 { log.validation(step: step, valLoss: 3 - 0.05 * s, valPerplexity: exp(3 - 0.05 * s)) }
        }
    }

    @Test func resumedLogEqualsUninterruptedLog() throws {
        let uninterrupted = try temporaryDirectory("whole")
        let resumed = try temporaryDirectory("resumed")
        defer {
            try? FileManager.default.removeItem(at: uninterrupted)
            try? FileManager.default.removeItem(at: resumed)
        }
        let whole = try MetricsLog(directory: uninterrupted)
        logRun(whole, steps: 1...12)
        whole.close()

        // The interrupted run checkpointed at step 5, went on to step 8 and died mid-line.
        let first = try MetricsLog(directory: resumed)
        logRun(first, steps: 1...8)
        first.close()
        let handle = try FileHandle(forWritingTo: first.fileURL)
        handle.seekToEndOfFile()
        handle.write(Data(#"{"kind":"train","step":9,"lo"#.utf8))
        handle.closeFile()

        let second = try MetricsLog(directory: resumed, mode: .append(resumeStep: 5))
        // Trimmed before anything new is written: steps 1...5 and the validation at 5.
        let trimmed = try String(contentsOf: second.fileURL, encoding: .utf8)
        #expect(trimmed.split(separator: "\n").count == 6)
        #expect(trimmed.hasSuffix(#""val_ppl":\#(JSONLineBuilder.number(exp(3 - 0.25)))}"# + "\n"))
        logRun(second, steps: 6...12)
        second.close()

        let expected = try String(contentsOf: whole.fileURL, encoding: .utf8)
        #expect(try String(contentsOf: second.fileURL, encoding: .utf8) == expected)
        #expect(expected.split(separator: "\n").count == 14)
    }

    /// Opening the log marks a session start for TensorBoard before any scalar: at step 0 for a
    /// fresh run, at the first new step when resuming.
    @Test(arguments: [(MetricsLog.Mode.fresh, Int64(0)), (.append(resumeStep: 5), 6)])
    func openingMarksASessionStart(mode: MetricsLog.Mode, markedStep: Int64) throws {
        let directory = try temporaryDirectory("session-start")
        defer { try? FileManager.default.removeItem(at: directory) }
        let tensorBoard = try TensorBoardWriter(directory: directory)
        let log = try MetricsLog(directory: directory, mode: mode, tensorBoard: tensorBoard)
        log.step(step: 6, loss: 1, lr: 1, gradNorm: 1, tokensPerSecond: 1)
        log.close()
        tensorBoard.close()
        let events = try #require(try readEventFiles(in: directory).first).events
        try #require(events.count == 6)
        #expect(events[1].sessionStatus == 1 && events[1].step == markedStep && events[1].values.isEmpty)
        #expect(events[2].sessionStatus == nil && events[2].values.first?.tag == "train/loss")
    }

    @Test func appendModeWithoutAnExistingLogStartsOne() throws {
        let directory = try temporaryDirectory("append-new")
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = try MetricsLog(directory: directory, mode: .append(resumeStep: 100))
        log.validation(step: 101, valLoss: 1, valPerplexity: exp(1))
        log.close()
        #expect(try lines(of: log.fileURL).count == 2)
    }

    @Test func appendModeKeepsAnIntactLogAsIs() throws {
        let directory = try temporaryDirectory("append-keep")
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try MetricsLog(directory: directory)
        logRun(first, steps: 1...5)
        first.close()
        let before = try Data(contentsOf: first.fileURL)
        #expect(try MetricsLog.dropLines(after: 5, in: first.fileURL) == 0)
        #expect(try MetricsLog.dropLines(after: 3, in: first.fileURL) == 3)  // steps 4, 5 and val 5
        #expect(try Data(contentsOf: first.fileURL) != before)
    }

    @Test func freshModeEmptiesAnOldLog() throws {
        let directory = try temporaryDirectory("fresh")
        defer { try? FileManager.default.removeItem(at: directory) }
        let old = try MetricsLog(directory: directory)
        logRun(old, steps: 1...3)
        old.close()
        let new = try MetricsLog(directory: directory)
        new.validation(step: 0, valLoss: 2, valPerplexity: exp(2))
        new.close()
        #expect(try lines(of: new.fileURL).count == 2)
    }

    @Test func jsonNumbersAndStrings() {
        #expect(JSONLineBuilder.number(2.1345) == "2.1345")
        #expect(JSONLineBuilder.number(1120) == "1120")
        #expect(JSONLineBuilder.number(-0.0) == "0")
        #expect(JSONLineBuilder.number(1e-5) == "1e-05")
        #expect(JSONLineBuilder.number(1e20) == "1e+20")
        #expect(JSONLineBuilder.number(-.infinity) == "null")
        #expect(JSONLineBuilder.quoted("a\"b\\c\nd\u{01}é") == #""a\"b\\c\nd\u0001é""#)
    }
}

// MARK: - Console

@Suite struct ProgressLineTests {
    static let houseStyleExample = ProgressLine(step: 120, totalSteps: 2000, loss: 2.1345, learningRate: 2.9e-4,
                                                gradNorm: 0.81, stepSeconds: 0.913, tokensPerSecond: 1120,
                                                etaSeconds: 12 * 60)

    @Test func houseStyleFormat() {
        #expect(ProgressLineTests.houseStyleExample.description
                == "step 120/2000 | loss 2.1345 | lr 2.9e-04 | norm 0.81 | 913 ms | 1120 tok/s | eta 12m")
        var line = ProgressLineTests.houseStyleExample
        line.elapsedSeconds = 3900
        line.etaSeconds = 45
        line.learningRate = 3e-5
        line.loss = 10.123456
        #expect(line.description
                == "step 120/2000 | loss 10.1235 | lr 3.0e-05 | norm 0.81 | 913 ms | 1120 tok/s | eta 45s | elapsed 1h05m")
    }

    @Test func durations() {
        #expect(formatDuration(0) == "0s")
        #expect(formatDuration(45) == "45s")
        #expect(formatDuration(59.4) == "59s")
        #expect(formatDuration(59.6) == "1m")
        #expect(formatDuration(12 * 60) == "12m")
        #expect(formatDuration(12 * 60 + 29) == "12m")
        #expect(formatDuration(3599) == "1h00m")
        #expect(formatDuration(3900) == "1h05m")
        #expect(formatDuration(25 * 3600 + 600) == "25h10m")
        #expect(formatDuration(-3) == "0s")
        #expect(formatDuration(.nan) == "?")
        #expect(formatDuration(.infinity) == "?")
    }

    @Test func etaFromAverageStepTime() {
        #expect(ProgressLine.estimatedRemaining(stepsLeft: 1880, stepsTimed: 100, secondsTimed: 50) == 940)
        #expect(ProgressLine.estimatedRemaining(stepsLeft: 10, stepsTimed: 0, secondsTimed: 0) == .infinity)
    }

    @Test func plainLinesOffATerminal() {
        var output = ""
        let reporter = ConsoleReporter(isTerminal: false) { output += $0 }
        reporter.report(ProgressLineTests.houseStyleExample)
        reporter.message("val loss 2.0412")
        reporter.finish()
        #expect(output == ProgressLineTests.houseStyleExample.description + "\nval loss 2.0412\n")
    }

    @Test func redrawnLineWithBarOnATerminal() {
        var output: [String] = []
        let reporter = ConsoleReporter(isTerminal: true, columns: { 200 }) { output.append($0) }
        let line = ProgressLineTests.houseStyleExample  // 6% done
        let drawn = "[#" + String(repeating: ".", count: 19) + "] " + line.description
        reporter.report(line)
        #expect(output == ["\r" + drawn + "\u{1B}[K"])
        reporter.message("val loss 2.0412")
        #expect(output.last == "\r\u{1B}[Kval loss 2.0412\n\r" + drawn + "\u{1B}[K")
        reporter.finish()
        reporter.finish()
        #expect(output.last == "\n" && output.count == 3)
        #expect(reporter.bar(1) == "[" + String(repeating: "#", count: 20) + "]")
        #expect(reporter.bar(0) == "[" + String(repeating: ".", count: 20) + "]")
    }

    @Test func narrowTerminalDropsTheBarThenCuts() {
        var output: [String] = []
        let line = ProgressLineTests.houseStyleExample
        var width = line.description.count + 1
        let reporter = ConsoleReporter(isTerminal: true, columns: { width }) { output.append($0) }
        reporter.report(line)
        #expect(output.last == "\r" + line.description + "\u{1B}[K")
        width = 20
        reporter.report(line)
        #expect(output.last == "\r" + String(line.description.prefix(19)) + "\u{1B}[K")
    }
}

// Reading a data file's bytes: memory-mapped for plain files, inflated in memory for gzip
// (`.gz`, or any file starting with gzip's magic bytes 1f 8b), standard input for "-".

import CZlib
import DTrainCore
import Foundation

/// The whole contents of a data file, decompressed.
public enum DataFileBytes {
    /// The bytes of `path` ("-" = standard input), gunzipped when the file is gzip.
    public static func read(path: String) throws -> Data {
        let data: Data
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            do { data = try FileOperation.read(path) } catch let error as FileError {
                throw DataFileError.cannotOpen(file: path, reason: error.cause)
            }
        }
        if isGzip(data) { return try gunzip(data, file: path) }
        if path.hasSuffix(".gz") && !data.isEmpty {
            throw DataFileError.gzip(file: path, reason: "named .gz but does not start with gzip's magic bytes 1f 8b")
        }
        return data
    }

    /// Whether `data` starts with gzip's magic bytes.
    public static func isGzip(_ data: Data) -> Bool {
        data.count >= 2 && data[data.startIndex] == 0x1F && data[data.startIndex + 1] == 0x8B
    }

    /// Inflates gzip data (several concatenated members are read one after another, as gzip -d does).
    public static func gunzip(_ data: Data, file: String) throws -> Data {
        var out = [UInt8]()
        out.reserveCapacity(data.count * 4)
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var stream = z_stream()
        guard dtrain_inflate_init_auto(&stream) == Z_OK else {
            throw DataFileError.gzip(file: file, reason: "inflateInit2 failed")
        }
        defer { inflateEnd(&stream) }
        try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
            guard let base = input.baseAddress else { return }
            var consumed = 0
            var status = Z_OK
            while true {
                if stream.avail_in == 0 && consumed < input.count {
                    let n = min(input.count - consumed, 1 << 30)
                    stream.next_in = UnsafeMutablePointer(mutating: base.advanced(by: consumed).assumingMemoryBound(to: Bytef.self))
                    stream.avail_in = uInt(n)
                    consumed += n
                }
                let produced: Int = buffer.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(chunk)
                    status = inflate(&stream, Z_NO_FLUSH)
                    return chunk - Int(stream.avail_out)
                }
                out.append(contentsOf: buffer[0..<produced])
                if status == Z_STREAM_END {
                    // Another member may follow; anything else after the last member is an error.
                    if stream.avail_in == 0 && consumed == input.count { return }
                    guard inflateReset(&stream) == Z_OK else {
                        throw DataFileError.gzip(file: file, reason: "inflateReset failed")
                    }
                    continue
                }
                if status == Z_BUF_ERROR && stream.avail_in == 0 && consumed == input.count {
                    throw DataFileError.gzip(file: file, reason: "truncated: the compressed stream ends early")
                }
                guard status == Z_OK || status == Z_BUF_ERROR else {
                    let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                    throw DataFileError.gzip(file: file, reason: message)
                }
            }
        }
        return Data(out)
    }
}

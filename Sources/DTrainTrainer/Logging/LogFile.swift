// Plumbing shared by the run logger's writers: a typed error and an append-only file that hands
// each chunk to the kernel in one go, so a crash of the process loses nothing already written.
import DTrainCore
import Foundation

/// Why a log or event file could not be created, rewritten or written.
public enum LoggingError: Error, CustomStringConvertible, Equatable {
    /// The output directory did not exist and could not be created.
    case cannotCreateDirectory(path: String, reason: String)
    /// `open(2)` failed on a log file.
    case cannotOpen(path: String, errno: Int32)
    /// An existing `metrics.jsonl` could not be read or replaced while resuming.
    case cannotRewrite(path: String, reason: String)
    /// `write(2)` failed (disk full, quota, the file system went away).
    case writeFailed(path: String, errno: Int32)

    public var description: String {
        switch self {
        case let .cannotCreateDirectory(path, reason):
            return "cannot create log directory \(path): \(reason). HINT: check that the output path is on a writable file system."
        case let .cannotOpen(path, code):
            return "cannot open \(path): \(String(cString: strerror(code))). HINT: check the output directory's permissions and free space."
        case let .cannotRewrite(path, reason):
            return "cannot trim \(path) for resuming: \(reason). HINT: move the old log aside, or start a fresh run directory."
        case let .writeFailed(path, code):
            return "write to \(path) failed: \(String(cString: strerror(code))). HINT: check free space and quota on the output file system."
        }
    }
}

/// Creates `directory` (and its parents) unless it already exists.
func ensureDirectory(_ directory: URL) throws {
    do {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    } catch {
        throw LoggingError.cannotCreateDirectory(path: directory.path, reason: FileProblem.cause(of: error, path: directory.path, wantDirectory: true))
    }
}

/// A file opened for appending through a raw descriptor: no user-space buffer between a `write`
/// call and the kernel, so whatever `write` returned from survives a crash of this process.
final class AppendOnlyFile {
    let path: String
    private var fd: Int32

    /// Opens `path` for appending; `exclusive` fails with `EEXIST` instead of reusing a file.
    init(path: String, exclusive: Bool = false, truncate: Bool = false) throws {
        var flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC
        if exclusive { flags |= O_EXCL }
        if truncate { flags |= O_TRUNC }
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw LoggingError.cannotOpen(path: path, errno: errno) }
        self.path = path
        self.fd = fd
    }

    deinit { closeFile() }

    var isOpen: Bool { fd >= 0 }

    /// Writes all of `bytes`, retrying short writes and `EINTR`.
    func append(_ bytes: [UInt8]) throws {
        guard fd >= 0 else { return }
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw LoggingError.writeFailed(path: path, errno: errno)
                }
                offset += n
            }
        }
    }

    /// Closes the descriptor; later writes are ignored.
    func closeFile() {
        if fd >= 0 { _ = close(fd) }
        fd = -1
    }
}

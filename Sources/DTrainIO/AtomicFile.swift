import DTrainCore
import Foundation

/// Whole-file writes that never leave a half-written file at the destination.
public enum AtomicFile {
    /// Where a file bound for `path` is written first: a hidden name beside it, unique to this
    /// process, so readers listing the directory never mistake it for the real file.
    public static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().path + "/." + url.lastPathComponent + ".tmp-\(getpid())"
    }

    /// Writes `data` to a temporary file beside `path`, then `commit`s it.
    public static func write(_ data: Data, to path: String) throws {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try FileOperation.createDirectory(dir)
        let tmp = temporaryPath(for: path)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw FileError(path: path, action: "write", errno: errno) }
        var failure: Int32 = 0
        data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + done, raw.count - done)
                if n <= 0 { failure = n < 0 ? errno : ENOSPC; break }
                done += n
            }
        }
        close(fd)
        guard failure == 0 else {
            unlink(tmp)
            throw FileError(path: path, action: "write", errno: failure)
        }
        try commit(temporary: tmp, to: path)
    }

    /// Makes a finished temporary file durable and puts it in place: fsync the file, rename it
    /// over `path` (atomic on POSIX file systems), fsync the directory so the rename survives a
    /// power cut. On failure the temporary file is removed and `path` is untouched.
    public static func commit(temporary tmp: String, to path: String) throws {
        let fd = open(tmp, O_RDONLY)
        let synced = fd >= 0 && fsync(fd) == 0
        if fd >= 0 { close(fd) }
        guard synced, rename(tmp, path) == 0 else {
            let code = errno
            unlink(tmp)
            throw FileError(path: path, action: "put in place (sync and rename \(tmp))", errno: code)
        }
        let dfd = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}

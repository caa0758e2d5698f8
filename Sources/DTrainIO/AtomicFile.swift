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
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tmp = temporaryPath(for: path)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: tmp]) }
        var ok = true
        data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + done, raw.count - done)
                if n <= 0 { ok = false; break }
                done += n
            }
        }
        close(fd)
        guard ok else {
            unlink(tmp)
            throw CocoaError(.fileWriteOutOfSpace, userInfo: [NSFilePathErrorKey: path])
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
            unlink(tmp)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, NSLocalizedDescriptionKey: "cannot sync or rename \(tmp) to \(path)"])
        }
        let dfd = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}

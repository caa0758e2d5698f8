// File-system failures in plain words. Foundation's own error text ("Error Domain=NSCocoaErrorDomain
// Code=513 ...", "error 256") names neither the real cause nor the setting the path came from, so
// every reader and writer in dtrain says what went wrong through these.
import Foundation

/// A file-system operation that failed: the path, what was being done, the cause in plain words,
/// and the config key or argument the path came from when known.
public struct FileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    /// "read", "write", "create the directory", ...
    public let action: String
    public let cause: String
    public let key: String?

    public init(path: String, action: String, cause: String, key: String? = nil) {
        self.path = path; self.action = action; self.cause = cause; self.key = key
    }

    /// From an errno value (0: diagnosed from the path itself).
    public init(path: String, action: String, errno code: Int32, key: String? = nil, wantDirectory: Bool = false) {
        self.init(path: path, action: action, cause: FileProblem.cause(path: path, errno: code, wantDirectory: wantDirectory), key: key)
    }

    /// From whatever Foundation threw, diagnosed again from the path.
    public init(path: String, action: String, error: Error, key: String? = nil, wantDirectory: Bool = false) {
        self.init(path: path, action: action, cause: FileProblem.cause(of: error, path: path, wantDirectory: wantDirectory), key: key)
    }

    public var description: String { "\(key.map { "\($0): " } ?? "")cannot \(action) \(path): \(cause)" }
}

public enum FileProblem {
    /// An errno value in words.
    public static func words(errno code: Int32) -> String {
        switch code {
        case ENOENT: return "no such file or directory"
        case EACCES, EPERM: return "permission denied"
        case EROFS: return "read-only file system"
        case EISDIR: return "is a directory"
        case ENOTDIR: return "a component of the path is a file, not a directory"
        case ENOSPC: return "no space left on the device (disk full)"
        case EDQUOT: return "disk quota exceeded"
        case EEXIST: return "already exists"
        case ENAMETOOLONG: return "the name is too long"
        default: return String(cString: strerror(code))
        }
    }

    /// The errno a Foundation error stands for, when it says.
    public static func errno(of error: Error) -> Int32? {
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return Int32(ns.code) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return Int32(underlying.code)
        }
        guard ns.domain == NSCocoaErrorDomain else { return nil }
        switch CocoaError.Code(rawValue: ns.code) {
        case .fileNoSuchFile, .fileReadNoSuchFile: return ENOENT
        case .fileReadNoPermission, .fileWriteNoPermission: return EACCES
        case .fileWriteVolumeReadOnly: return EROFS
        case .fileWriteOutOfSpace: return ENOSPC
        case .fileWriteFileExists: return EEXIST
        default: return nil
        }
    }

    /// Whether `error` is Foundation's (its text would be raw), not one of dtrain's own.
    public static func isFoundationError(_ error: Error) -> Bool {
        let domain = (error as NSError).domain
        return domain == NSCocoaErrorDomain || domain == NSPOSIXErrorDomain
    }

    /// The cause of a failure on `path`, found from the path where it can be (what is there, its
    /// nearest existing ancestor, whether that is writable, on a read-only file system), else
    /// from `error`.
    public static func cause(of error: Error, path: String, wantDirectory: Bool = false) -> String {
        cause(path: path, errno: errno(of: error) ?? 0, wantDirectory: wantDirectory)
    }

    /// As `cause(of:path:)` from an errno value (0: unknown).
    public static func cause(path: String, errno code: Int32, wantDirectory: Bool = false) -> String {
        if let found = diagnose(path, wantDirectory: wantDirectory, errno: code) { return found }
        return code != 0 ? words(errno: code) : "the operation failed"
    }

    private static func diagnose(_ path: String, wantDirectory: Bool, errno code: Int32) -> String? {
        var st = stat()
        if stat(path, &st) == 0 {
            let isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
            if wantDirectory && !isDirectory { return "is a file, not a directory" }
            if !wantDirectory && isDirectory { return "is a directory, not a file" }
            if code == ENOSPC || code == EDQUOT { return words(errno: code) }
            if readOnlyFileSystem(path) && code != ENOENT && (code == EROFS || code == EACCES || code == 0) { return words(errno: EROFS) }
            return nil
        }
        // Missing: is something in the way, or can its directory not be written?
        var ancestor = URL(fileURLWithPath: path).deletingLastPathComponent()
        while ancestor.path != "/" && stat(ancestor.path, &st) != 0 { ancestor.deleteLastPathComponent() }
        guard stat(ancestor.path, &st) == 0 else { return nil }
        if (st.st_mode & S_IFMT) != S_IFDIR { return "\(ancestor.path) is a file, not a directory" }
        if code == ENOENT { return words(errno: ENOENT) }
        if access(ancestor.path, W_OK) != 0 {
            return readOnlyFileSystem(ancestor.path) ? "\(words(errno: EROFS)) (\(ancestor.path))" : "permission denied (\(ancestor.path) is not writable)"
        }
        return nil
    }

    private static func readOnlyFileSystem(_ path: String) -> Bool {
        var fs = statvfs()
        return statvfs(path, &fs) == 0 && (fs.f_flag & UInt(ST_RDONLY)) != 0
    }

    /// Why `path` cannot be read as a file, or nil when it can (a pipe or device counts).
    public static func readProblem(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return words(errno: Foundation.errno) }
        if (st.st_mode & S_IFMT) == S_IFDIR { return "is a directory, not a file" }
        if access(path, R_OK) != 0 { return words(errno: Foundation.errno) }
        return nil
    }

    /// Why `path` cannot be (or become) a writable directory, or nil.
    public static func directoryProblem(_ path: String) -> String? {
        var st = stat()
        if stat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) != S_IFDIR { return "is a file, not a directory" }
            if access(path, W_OK) != 0 { return readOnlyFileSystem(path) ? words(errno: EROFS) : "permission denied (not writable)" }
            return nil
        }
        return diagnose(path, wantDirectory: true, errno: 0)
    }
}

/// File operations that throw `FileError`.
public enum FileOperation {
    /// Creates `path` and its parents; a failure names `key` and the real cause.
    public static func createDirectory(_ path: String, key: String? = nil) throws {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw FileError(path: path, action: "create the directory", error: error, key: key, wantDirectory: true)
        }
    }

    /// The bytes of `path`: memory-mapped for a regular file, read through for a pipe or a device
    /// (`/dev/stdin`), which cannot be mapped.
    public static func read(_ path: String, key: String? = nil, mapped: Bool = true) throws -> Data {
        if let problem = FileProblem.readProblem(path) { throw FileError(path: path, action: "read", cause: problem, key: key) }
        var st = stat()
        let regular = stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
        do {
            if regular { return try Data(contentsOf: URL(fileURLWithPath: path), options: mapped ? .alwaysMapped : []) }
            guard let handle = FileHandle(forReadingAtPath: path) else { throw CocoaError(.fileReadNoPermission) }
            defer { try? handle.close() }
            return handle.readDataToEndOfFile()
        } catch {
            throw FileError(path: path, action: "read", error: error, key: key)
        }
    }
}

/// An error's text for the user: Foundation's own errors are put in plain words.
public func userFacingDescription(_ error: Error) -> String {
    guard FileProblem.isFoundationError(error) else { return "\(error)" }
    let ns = error as NSError
    let path = (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
    if let path { return FileError(path: path, action: "use", error: error).description }
    return FileProblem.errno(of: error).map(FileProblem.words) ?? "a file operation failed"
}

import Foundation

/// Where a test process writes its files: one directory under the system's temporary directory,
/// removed when the process exits, so that a run of the suite leaves nothing behind even when a
/// test fails halfway. Tests that write large files (full fine-tuning checkpoints are 1.6 GB)
/// still remove their own as they finish.
public enum TestScratch {
    /// `dtrain-tests-<pid>` under the temporary directory.
    public static let root: URL = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("dtrain-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: TestScratch.root) }
        return root
    }()

    /// A fresh, empty directory named after `label`.
    public static func directory(_ label: String) throws -> URL {
        let url = root.appendingPathComponent("\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A path for a new file named after `label` (not created).
    public static func file(_ label: String) -> URL {
        root.appendingPathComponent("\(UUID().uuidString)-\(label)")
    }
}

import CHDF5
import Foundation

/// Writes raw bytes at given offsets of an existing file, bypassing the page cache (O_DIRECT)
/// where the file system allows it.
///
/// Buffered writes of a checkpoint's gigabytes cost this kind of VM more than the disk does:
/// every page-cache page is freshly allocated and then flushed again by fsync (README,
/// Checkpoints, has the rates). O_DIRECT needs block-aligned offsets, lengths and
/// memory, so whole blocks go through an aligned staging buffer and any unaligned head or tail
/// through an ordinary descriptor.
final class RawFileWriter {
    static let block = 4096
    private static let stagingBytes = 16 << 20
    let path: String
    private let fd: Int32
    private let directFD: Int32
    private let staging: UnsafeMutableRawPointer

    init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY)
        guard fd >= 0 else { throw CheckpointError(path: path, message: "cannot reopen the file to write tensor data: \(String(cString: strerror(errno)))") }
        directFD = open(path, O_WRONLY | dtrain_o_direct()) // -1 on file systems without O_DIRECT (tmpfs): all buffered
        staging = UnsafeMutableRawPointer.allocate(byteCount: Self.stagingBytes, alignment: Self.block)
    }

    deinit {
        close(fd)
        if directFD >= 0 { close(directFD) }
        staging.deallocate()
    }

    /// Writes `count` bytes from `source` at file offset `offset`.
    func write(_ source: UnsafeRawPointer, count: Int, at offset: Int) throws {
        var done = 0
        if directFD >= 0 {
            // Unaligned head through the page cache, whole blocks direct, the tail buffered again.
            let head = min(count, (Self.block - offset % Self.block) % Self.block)
            if head > 0 { try writeAll(fd, source, head, offset) }
            done = head
            let blocks = (count - done) / Self.block * Self.block
            let end = done + blocks
            while done < end {
                let n = min(end - done, Self.stagingBytes)
                staging.copyMemory(from: source + done, byteCount: n)
                try writeAll(directFD, UnsafeRawPointer(staging), n, offset + done)
                done += n
            }
        }
        if done < count { try writeAll(fd, source + done, count - done, offset + done) }
    }

    private func writeAll(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int, _ offset: Int) throws {
        var done = 0
        while done < count {
            let n = pwrite(fd, bytes + done, count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw CheckpointError(path: path, message: "writing tensor data failed: \(String(cString: strerror(errno))) (disk full?)")
            }
            done += n
        }
    }
}

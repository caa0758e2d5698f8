import CCrypto
import Foundation

/// SHA-256 through libcrypto's EVP interface, which uses the CPU's SHA extensions where present
/// (several times the rate of portable code, so that checksums keep up with the disk).
public struct SHA256Digest {
    private let context: OpaquePointer

    public init() {
        context = EVP_MD_CTX_new()
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
    }

    /// Adds `count` bytes at `bytes`.
    public func update(_ bytes: UnsafeRawPointer, count: Int) {
        // Fed in 1 GiB pieces: EVP takes a size_t, but some builds mishandle single huge updates.
        var done = 0
        while done < count {
            let n = min(count - done, 1 << 30)
            EVP_DigestUpdate(context, bytes + done, n)
            done += n
        }
    }

    /// The digest as 64 lowercase hex digits; the object is spent afterwards.
    public func finalize() -> String {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &out, &length)
        EVP_MD_CTX_free(context)
        return out.map { String(format: "%02x", $0) }.joined()
    }

    /// SHA-256 of one block of memory, as hex.
    public static func hex(_ bytes: UnsafeRawPointer, count: Int) -> String {
        let d = SHA256Digest()
        d.update(bytes, count: count)
        return d.finalize()
    }

    /// SHA-256 of `count` floats' little-endian bytes, as hex.
    public static func hex(floats: UnsafePointer<Float>, count: Int) -> String {
        hex(UnsafeRawPointer(floats), count: count * MemoryLayout<Float>.stride)
    }
}

import DTrainCore
import Testing

/// Checkpoints store FNV-1a fingerprints of the model and the data, so the hash must stay the
/// standard one: these are FNV's published 64-bit FNV-1a test vectors.
@Suite struct FNV1aTests {
    static func hash(_ s: String) -> UInt64 {
        var h = FNV1a()
        for b in s.utf8 { h.mix(UInt64(b)) }
        return h.value
    }

    @Test func publishedVectors() {
        #expect(Self.hash("") == 0xCBF2_9CE4_8422_2325)
        #expect(Self.hash("a") == 0xAF63_DC4C_8601_EC8C)
        #expect(Self.hash("foobar") == 0x8594_4171_F739_67E8)
    }
}

// GPT-2's byte-level alphabet: every byte value stands for one printable Unicode scalar, so a
// vocabulary of strings can spell any byte sequence. Bytes that are already printable Latin-1
// ('!'...'~', '¡'...'¬', '®'...'ÿ') stand for themselves; the other 68 (controls, space, DEL,
// NBSP, soft hyphen) are moved, in byte order, to U+0100...U+0143. So ' ' is 'Ġ' (U+0120) and
// '\n' is 'Ċ' (U+010A).

/// The reversible byte <-> scalar map that byte-level BPE vocabularies are written in.
enum ByteLevel {
    /// `byteToScalar[b]` is the scalar that spells byte `b` in vocabulary strings.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if isPrintableLatin1(b) {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// `scalarToByte[v]` is the byte that scalar `v` spells, or -1; scalars past the end spell none.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 256 + 68)
        for (b, v) in byteToScalar.enumerated() { table[Int(v)] = Int16(b) }
        return table
    }()

    private static func isPrintableLatin1(_ b: Int) -> Bool {
        (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
    }

    /// The vocabulary string that spells `bytes`.
    static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(byteToScalar[Int(b)])!) }
        return String(s)
    }

    /// The bytes a vocabulary string spells, or nil when it holds a scalar outside the alphabet
    /// (such strings are added tokens written as plain text, like "<|im_start|>" with a space).
    static func decode(_ token: String) -> [UInt8]? {
        var out = [UInt8]()
        out.reserveCapacity(token.utf8.count)
        for scalar in token.unicodeScalars {
            let v = Int(scalar.value)
            guard v < scalarToByte.count, scalarToByte[v] >= 0 else { return nil }
            out.append(UInt8(scalarToByte[v]))
        }
        return out
    }
}

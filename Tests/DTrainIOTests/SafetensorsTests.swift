import DTrainCore
import DTrainIO
import DTrainTestSupport
import Foundation
import Testing

/// Broken safetensors files and model directories each get their own error.
@Suite struct SafetensorsTests {
    /// Writes a safetensors file holding one F32 tensor `w` of `shape`, optionally cut short.
    func write(_ name: String, header: String? = nil, shape: [Int] = [2, 3], dropBytes: Int = 0) throws -> String {
        let count = shape.reduce(1, *)
        let json = header ?? "{\"w\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[0,\(4 * count)]}}"
        var data = Data()
        var len = UInt64(json.utf8.count).littleEndian
        data.append(Data(bytes: &len, count: 8))
        data.append(Data(json.utf8))
        for i in 0..<count { var f = Float(i); data.append(Data(bytes: &f, count: 4)) }
        data.removeLast(dropBytes)
        let path = TestScratch.file(name).path
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func readsValues() throws {
        let file = try SafetensorsFile(path: try write("ok"))
        #expect(try file.floats("w") == [0, 1, 2, 3, 4, 5])
    }

    @Test func truncatedFile() throws {
        let path = try write("trunc", dropBytes: 4)
        #expect { try SafetensorsFile(path: path) } throws: { error in
            guard case SafetensorsError.truncated(let p, let expected, _) = error else { return false }
            return p == path && expected > 0 && "\(error)".contains("truncated")
        }
    }

    @Test func badHeader() throws {
        let path = try write("bad", header: "not json at all")
        #expect { try SafetensorsFile(path: path) } throws: { error in
            if case SafetensorsError.badHeader = error { return true }
            return false
        }
    }

    @Test func missingTensorAndShapeMismatch() throws {
        let file = try SafetensorsFile(path: try write("shape"))
        var out = [Float](repeating: 0, count: 6)
        #expect { try out.withUnsafeMutableBufferPointer { try file.read("nope", into: $0.baseAddress!) } } throws: { error in
            if case SafetensorsError.missingTensor(_, "nope") = error { return true }
            return false
        }
        #expect { try out.withUnsafeMutableBufferPointer { try file.read("w", into: $0.baseAddress!, expectedShape: [3, 2]) } } throws: { error in
            if case SafetensorsError.shapeMismatch(_, "w", [3, 2], [2, 3]) = error { return "\(error)".contains("[3, 2]") }
            return false
        }
    }

    @Test func unsupportedArchitecture() throws {
        let json = Data(#"{"model_type": "gpt2", "vocab_size": 10}"#.utf8)
        #expect { try HFModelLoader.config(json: json, path: "config.json") } throws: { error in
            "\(error)".contains("model_type 'gpt2' is not supported")
        }
    }
}

import DTrainCore
import DTrainData
import Foundation

/// A model ready to run: its configuration, its weights in a flat buffer, its tokenizer.
public struct LoadedModel {
    public let config: LlamaConfig
    public let params: FloatBuffer
    public let tokenizer: BPETokenizer
    /// What the model was loaded from.
    public let source: String
    /// The model's chat template, when its files carry one.
    public let chatTemplate: String?
}

/// Errors naming a model path that is neither a GGUF file nor a Hugging Face model directory.
public enum ModelPathError: Error, CustomStringConvertible {
    case notFound(String)
    case unrecognised(String)
    public var description: String {
        switch self {
        case .notFound(let p): return "\(p): no such file or directory. HINT: bash launch/fetch-model.sh prints the demo model's path"
        case .unrecognised(let p):
            return "\(p): not a model: expected a .gguf file or a directory with config.json and model.safetensors"
        }
    }
}

/// Loads a model from a `.gguf` file or a Hugging Face model directory.
public enum ModelLoader {
    /// Loads configuration, weights (dequantised to float32) and tokenizer.
    public static func load(path: String) throws -> LoadedModel {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw ModelPathError.notFound(path) }
        if isDir.boolValue {
            let url = URL(fileURLWithPath: path)
            let config = try HFModelLoader.config(directory: url)
            let layout = ParameterLayout(config: config)
            let params = FloatBuffer(count: layout.count)
            try HFModelLoader.loadWeights(directory: url, layout: layout, into: params)
            let tokenizer = try TokenizerLoader.fromHuggingFaceDirectory(url)
            return LoadedModel(config: config, params: params, tokenizer: tokenizer, source: path,
                               chatTemplate: chatTemplate(directory: url))
        }
        let file = try GGUFFile(path: path)
        let config = try GGUFLlamaLoader.config(from: file)
        let layout = ParameterLayout(config: config)
        let params = FloatBuffer(count: layout.count)
        try GGUFLlamaLoader.loadWeights(from: file, config: config, layout: layout, into: params)
        let tokenizer = try TokenizerLoader.fromGGUF(file)
        return LoadedModel(config: config, params: params, tokenizer: tokenizer, source: path,
                           chatTemplate: file.metadata["tokenizer.chat_template"]?.string)
    }

    /// Loads only the tokenizer (no weights), for commands that never run the model.
    public static func loadTokenizer(path: String) throws -> BPETokenizer {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw ModelPathError.notFound(path) }
        if isDir.boolValue { return try TokenizerLoader.fromHuggingFaceDirectory(URL(fileURLWithPath: path)) }
        return try TokenizerLoader.fromGGUF(try GGUFFile(path: path))
    }

    static func chatTemplate(directory: URL) -> String? {
        let url = directory.appendingPathComponent("tokenizer_config.json")
        guard let data = try? Data(contentsOf: url),
              let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        return obj["chat_template"] as? String
    }
}

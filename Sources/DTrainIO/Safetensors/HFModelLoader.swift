import DTrainCore
import Foundation

/// Reads a Hugging Face model directory: `config.json` plus `model.safetensors` or a sharded
/// `model.safetensors.index.json`.
public enum HFModelLoader {
    /// The model configuration from `config.json` (transformers 4 or 5 layout).
    public static func config(directory: URL) throws -> LlamaConfig {
        let url = directory.appendingPathComponent("config.json")
        guard let data = try? Data(contentsOf: url) else {
            throw SafetensorsError.cannotOpen(path: url.path, reason: "no config.json in the model directory")
        }
        return try config(json: data, path: url.path)
    }

    /// Parses a `config.json` body; `path` names it in errors.
    public static func config(json data: Data, path: String) throws -> LlamaConfig {
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw SafetensorsError.badHeader(path: path, reason: "config.json is not a JSON object")
        }
        let modelType = (obj["model_type"] as? String) ?? "llama"
        let supported = ["llama", "mistral", "qwen2"]
        guard supported.contains(modelType) else {
            throw ModelConfigError(message: "\(path): model_type '\(modelType)' is not supported; dtrain trains \(supported.joined(separator: ", "))")
        }
        func int(_ key: String) throws -> Int {
            guard let v = obj[key] as? Int else {
                throw ModelConfigError(message: "\(path): missing or non-integer '\(key)'")
            }
            return v
        }
        func number(_ value: Any?) -> Float? { (value as? NSNumber).map { $0.floatValue } }
        let heads = try int("num_attention_heads")
        let ropeTheta = number(obj["rope_theta"])
            ?? number((obj["rope_parameters"] as? [String: Any])?["rope_theta"]) ?? 10000
        let cfg = LlamaConfig(
            architecture: modelType,
            vocabSize: try int("vocab_size"), hiddenSize: try int("hidden_size"),
            intermediateSize: try int("intermediate_size"), numLayers: try int("num_hidden_layers"),
            numHeads: heads, numKVHeads: (obj["num_key_value_heads"] as? Int) ?? heads,
            headDim: obj["head_dim"] as? Int, ropeTheta: ropeTheta,
            rmsNormEps: number(obj["rms_norm_eps"]) ?? 1e-6,
            tieWordEmbeddings: (obj["tie_word_embeddings"] as? Bool) ?? false,
            attentionBias: (obj["attention_bias"] as? Bool) ?? (modelType == "qwen2"),
            maxPositionEmbeddings: (obj["max_position_embeddings"] as? Int) ?? 2048)
        try cfg.validate()
        return cfg
    }

    /// The safetensors files of a directory, and which file holds each tensor.
    public static func shards(directory: URL) throws -> [String: SafetensorsFile] {
        let single = directory.appendingPathComponent("model.safetensors")
        if FileManager.default.fileExists(atPath: single.path) {
            let file = try SafetensorsFile(path: single.path)
            return file.tensors.keys.reduce(into: [:]) { $0[$1] = file }
        }
        let indexURL = directory.appendingPathComponent("model.safetensors.index.json")
        guard let data = try? Data(contentsOf: indexURL),
              let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let map = obj["weight_map"] as? [String: String] else {
            throw SafetensorsError.cannotOpen(path: directory.path,
                                              reason: "neither model.safetensors nor a readable model.safetensors.index.json")
        }
        var files: [String: SafetensorsFile] = [:]
        var byTensor: [String: SafetensorsFile] = [:]
        for (tensor, fileName) in map {
            if files[fileName] == nil {
                files[fileName] = try SafetensorsFile(path: directory.appendingPathComponent(fileName).path)
            }
            byTensor[tensor] = files[fileName]
        }
        return byTensor
    }

    /// Loads every parameter of `layout` into `params`, checking each shape against the config.
    public static func loadWeights(directory: URL, layout: ParameterLayout, into params: FloatBuffer) throws {
        let byTensor = try shards(directory: directory)
        for spec in layout.specs {
            guard let file = byTensor[spec.name] else {
                throw SafetensorsError.missingTensor(path: directory.path, name: spec.name)
            }
            try file.read(spec.name, into: params.pointer(at: spec.offset), expectedShape: spec.shape)
        }
    }
}

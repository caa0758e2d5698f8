// The one loader of a model's assets: what every command reads from a `.gguf` file or a Hugging
// Face model directory (configuration, tokenizer, chat template, BOS / EOS / end-of-turn,
// generation defaults, the model's hub id), and its weights on request.
//
// Where each asset is read:
//                      GGUF                                  Hugging Face directory
//   configuration      llama.* / qwen2.* keys                config.json (optional for data commands)
//   tokenizer          tokenizer.ggml.*                      tokenizer.json (+ tokenizer_config.json)
//   chat template      tokenizer.chat_template               tokenizer_config.json chat_template, else chat_template.jinja
//   BOS / EOS strings  the tokenizer's ids                   tokenizer_config.json bos_token / eos_token (null: none)
//   end of turn        tokenizer.ggml.eot_token_id, eos      generation_config.json eos_token_id, eos
//   generation         general.sampling.*                    generation_config.json
//   hub id             general.source.huggingface.repository config.json _name_or_path (an "org/name")
//                      or a huggingface.co repo URL
import DTrainCore
import DTrainData
import Foundation

/// Decoding settings a model's files recommend (nil: the files say nothing).
public struct GenerationDefaults: Equatable, Sendable {
    public var temperature: Float?
    public var topK: Int?
    public var topP: Float?
    public var repetitionPenalty: Float?
    public var maxNewTokens: Int?
    public init() {}
}

/// A model's configuration, tokenizer, chat template and special tokens, read without its
/// weights (`loadWeights()` reads them).
public struct ModelAssets {
    public enum Kind: Sendable { case gguf, huggingFace }
    /// The path given: a `.gguf` file or a model directory.
    public let path: String
    public let kind: Kind
    /// The architecture; nil only for a Hugging Face directory without config.json (enough for
    /// the data commands, which never run the model).
    public let config: LlamaConfig?
    public let tokenizer: BPETokenizer
    /// The model's own chat template source, if its files carry one.
    public let chatTemplateSource: String?
    /// The BOS / EOS strings a template sees as `bos_token` / `eos_token`.
    public let bosToken: String?
    public let eosToken: String?
    /// Tokens that end an answer: EOS, and the template's end-of-turn token when it differs.
    public let stopTokenIDs: [Int32]
    public let generation: GenerationDefaults
    /// The model's Hugging Face id ("HuggingFaceTB/SmolLM2-135M-Instruct") when its files name it.
    public let huggingFaceID: String?
    public let padTokenID: Int32?
    public let unknownTokenID: Int32?
    /// The GGUF file's metadata (nil for a Hugging Face directory). The file itself is not kept
    /// open: its mapped pages, touched while the weights are read, would stay in the RSS.
    public let ggufMetadata: [String: GGUFValue]?

    /// Reads every asset but the weights.
    ///
    /// - Throws: `ModelPathError` for a path that is neither; the format loaders' errors (each
    ///   naming the file) for a file that cannot be used.
    public static func load(path: String) throws -> ModelAssets {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw ModelPathError.notFound(path) }
        return isDir.boolValue ? try huggingFace(directory: path) : try gguf(path: path)
    }

    private static func gguf(path: String) throws -> ModelAssets {
        let file = try GGUFFile(path: path)
        let meta = file.metadata
        let config = try GGUFLlamaLoader.config(from: file)
        let tokenizer = try TokenizerLoader.fromGGUF(file)
        var generation = GenerationDefaults()
        generation.temperature = meta["general.sampling.temp"]?.float
        generation.topK = meta["general.sampling.top_k"]?.int
        generation.topP = meta["general.sampling.top_p"]?.float
        generation.repetitionPenalty = meta["general.sampling.penalty_repeat"]?.float
        var stops = [Int32]()
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let id = meta[key]?.int, id >= 0, id < tokenizer.vocabSize { stops.append(Int32(id)) }
        }
        let hubID = meta["general.source.huggingface.repository"]?.string.flatMap(hubRepository)
            ?? ["general.source.repo_url", "general.repo_url", "general.source.url", "general.url"]
                .lazy.compactMap { meta[$0]?.string.flatMap(hubRepository) }.first
        return ModelAssets(path: path, kind: .gguf, config: config, tokenizer: tokenizer,
                           chatTemplateSource: meta["tokenizer.chat_template"]?.string,
                           bosToken: tokenizer.bosTokenID.map(tokenizer.tokenString),
                           eosToken: tokenizer.eosTokenID.map(tokenizer.tokenString),
                           stopTokenIDs: withEndOfTurn(stops, tokenizer), generation: generation,
                           huggingFaceID: hubID, padTokenID: tokenID(meta["tokenizer.ggml.padding_token_id"]?.int, tokenizer),
                           unknownTokenID: tokenID(meta["tokenizer.ggml.unknown_token_id"]?.int, tokenizer), ggufMetadata: meta)
    }

    private static func huggingFace(directory path: String) throws -> ModelAssets {
        let dir = URL(fileURLWithPath: path)
        let configURL = dir.appendingPathComponent("config.json")
        let hasConfig = FileManager.default.fileExists(atPath: configURL.path)
        let config = hasConfig ? try HFModelLoader.config(directory: dir) : nil
        let tokenizer = try TokenizerLoader.fromHuggingFaceDirectory(dir)
        var source: String?
        var pad: Int32?, unknown: Int32?
        var bos = tokenizer.bosTokenID.map(tokenizer.tokenString)
        var eos = tokenizer.eosTokenID.map(tokenizer.tokenString)
        if let object = jsonObject(dir.appendingPathComponent("tokenizer_config.json")) {
            source = TokenizerConfigJSON.chatTemplate(object)
            bos = TokenizerConfigJSON.token(object, "bos_token", default: bos)
            eos = TokenizerConfigJSON.token(object, "eos_token", default: eos)
            pad = TokenizerConfigJSON.token(object, "pad_token", default: nil).flatMap(tokenizer.id(of:))
            unknown = TokenizerConfigJSON.token(object, "unk_token", default: nil).flatMap(tokenizer.id(of:))
        }
        if source == nil {
            source = try? String(contentsOf: dir.appendingPathComponent("chat_template.jinja"), encoding: .utf8)
        }
        var generation = GenerationDefaults()
        var stops = tokenizer.eosTokenID.map { [$0] } ?? []
        if let g = jsonObject(dir.appendingPathComponent("generation_config.json")) {
            generation.temperature = (g["temperature"] as? NSNumber)?.floatValue
            generation.topK = g["top_k"] as? Int
            generation.topP = (g["top_p"] as? NSNumber)?.floatValue
            generation.repetitionPenalty = (g["repetition_penalty"] as? NSNumber)?.floatValue
            generation.maxNewTokens = g["max_new_tokens"] as? Int
            let ids = (g["eos_token_id"] as? [Int]) ?? (g["eos_token_id"] as? Int).map { [$0] } ?? []
            for id in ids where id >= 0 && id < tokenizer.vocabSize && !stops.contains(Int32(id)) { stops.append(Int32(id)) }
        }
        let named = hasConfig ? jsonObject(configURL)?["_name_or_path"] as? String : nil
        return ModelAssets(path: path, kind: .huggingFace, config: config, tokenizer: tokenizer, chatTemplateSource: source,
                           bosToken: bos, eosToken: eos, stopTokenIDs: withEndOfTurn(stops, tokenizer),
                           generation: generation, huggingFaceID: named.flatMap(hubRepository), padTokenID: pad,
                           unknownTokenID: unknown, ggufMetadata: nil)
    }

    /// The configuration, for commands that run the model.
    public func requireConfig() throws -> LlamaConfig {
        guard let config else {
            throw SafetensorsError.cannotOpen(path: path + "/config.json", reason: "no config.json in the model directory; "
                                              + "running the model needs it (the data commands do not)")
        }
        return config
    }

    /// The weights, dequantised to float32, in `ParameterLayout(config:)`'s order.
    public func loadWeights() throws -> FloatBuffer {
        let config = try requireConfig()
        let layout = ParameterLayout(config: config)
        let params = FloatBuffer(count: layout.count)
        if kind == .gguf {
            try GGUFLlamaLoader.loadWeights(from: try GGUFFile(path: path), config: config, layout: layout, into: params)
        } else {
            try HFModelLoader.loadWeights(directory: URL(fileURLWithPath: path), layout: layout, into: params)
        }
        return params
    }

    /// The template to render with: `overridePath` (a `.jinja` file or a `tokenizer_config.json`)
    /// when given, else the model's own; nil when neither exists. Every command builds its
    /// template here, so an override means the same to `train` and to the data commands.
    public func chatTemplate(overridePath: String?) throws -> ChatTemplateContext? {
        if let overridePath {
            return try ChatTemplateContext.load(file: overridePath, defaultBOS: bosToken, defaultEOS: eosToken)
        }
        guard let source = chatTemplateSource else { return nil }
        return try ChatTemplateContext(source: source, bosToken: bosToken, eosToken: eosToken, origin: path)
    }

    /// "org/name" from an id or a huggingface.co URL; nil for anything else (a local path).
    static func hubRepository(_ text: String) -> String? {
        var s = text.trimmingCharacters(in: .whitespaces)
        for prefix in ["https://huggingface.co/", "http://huggingface.co/", "hf://"] where s.hasPrefix(prefix) {
            s = String(s.dropFirst(prefix.count))
            let parts = s.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count >= 2 else { return nil }
            s = parts[0] + "/" + parts[1]
        }
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".."
                                                   && $0.unicodeScalars.allSatisfy(allowed.contains) }) else { return nil }
        return s
    }

    /// `stops` plus the chat formats' end-of-turn tokens the vocabulary holds as control tokens.
    private static func withEndOfTurn(_ stops: [Int32], _ tokenizer: BPETokenizer) -> [Int32] {
        var out = stops
        for name in ["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"] {
            if let id = tokenizer.id(of: name), tokenizer.isSpecial(id), !out.contains(id) { out.append(id) }
        }
        return out
    }

    private static func tokenID(_ id: Int?, _ tokenizer: BPETokenizer) -> Int32? {
        guard let id, id >= 0, id < tokenizer.vocabSize else { return nil }
        return Int32(id)
    }

    private static func jsonObject(_ url: URL) -> [String: Any]? {
        guard let data = try? Data(contentsOf: url) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }
}

/// A model ready to run: its assets and its weights in one flat buffer.
public struct LoadedModel {
    public let assets: ModelAssets
    public let config: LlamaConfig
    public let params: FloatBuffer
    public var tokenizer: BPETokenizer { assets.tokenizer }
    /// What the model was loaded from.
    public var source: String { assets.path }
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

/// Loads a model, assets and weights, from a `.gguf` file or a Hugging Face model directory.
public enum ModelLoader {
    public static func load(path: String) throws -> LoadedModel {
        let assets = try ModelAssets.load(path: path)
        return LoadedModel(assets: assets, config: try assets.requireConfig(), params: try assets.loadWeights())
    }
}

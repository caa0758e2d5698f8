// The tokenizer files of a Hugging Face model directory, written beside every adapter and model
// dtrain saves so that the directory is self-contained:
//   tokenizer.json           the `tokenizers` library's serialization (byte-level BPE)
//   tokenizer_config.json    BOS / EOS / PAD / UNK, add_bos_token / add_eos_token, the chat template
//                            the run trained with, model_max_length
//   special_tokens_map.json  the same special tokens, for older loaders
// From a Hugging Face source, tokenizer.json is copied byte for byte; from a GGUF it is rebuilt from
// `tokenizer.ggml.*`: the vocabulary, the merges, control and user-defined tokens as added tokens,
// and the pre-tokenizer `tokenizer.ggml.pre` names (SmolLM's digit split included).
import DTrainCore
import DTrainData
import Foundation

public enum TokenizerFiles {
    /// Writes the tokenizer files of `assets` into `directory`; `chatTemplate` is the template
    /// source the run rendered its data with (nil: the model's own, if any).
    public static func write(_ assets: ModelAssets, chatTemplate: String?, to directory: String) throws {
        let tokenizer = assets.tokenizer
        let template = chatTemplate ?? assets.chatTemplateSource
        if let meta = assets.ggufMetadata {
            try AtomicFile.write(try tokenizerJSON(gguf: meta, tokenizer: tokenizer, path: assets.path),
                                 to: directory + "/tokenizer.json")
        } else {
            let source = URL(fileURLWithPath: assets.path).appendingPathComponent("tokenizer.json")
            guard let data = FileManager.default.contents(atPath: source.path) else {
                throw TokenizerLoaderError.unreadable(path: source.path, reason: "cannot copy it into \(directory)")
            }
            try AtomicFile.write(data, to: directory + "/tokenizer.json")
        }
        var special: [String: Any] = [:]
        if let bos = assets.bosToken { special["bos_token"] = bos }
        if let eos = assets.eosToken { special["eos_token"] = eos }
        if let id = assets.padTokenID { special["pad_token"] = tokenizer.tokenString(id) }
        if let id = assets.unknownTokenID { special["unk_token"] = tokenizer.tokenString(id) }
        var config = special
        config["add_bos_token"] = tokenizer.addBOS
        config["add_eos_token"] = tokenizer.addEOS
        config["clean_up_tokenization_spaces"] = false
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        if let n = assets.config?.maxPositionEmbeddings { config["model_max_length"] = n }
        if let template { config["chat_template"] = template }
        try writeJSON(config, to: directory + "/tokenizer_config.json")
        try writeJSON(special, to: directory + "/special_tokens_map.json")
    }

    /// `generation_config.json`: BOS, the tokens that end an answer, and the model's sampling defaults.
    public static func writeGenerationConfig(_ assets: ModelAssets, to directory: String) throws {
        var g: [String: Any] = [:]
        if let bos = assets.tokenizer.bosTokenID { g["bos_token_id"] = Int(bos) }
        let stops = assets.stopTokenIDs.map(Int.init)
        if stops.count == 1 { g["eos_token_id"] = stops[0] } else if !stops.isEmpty { g["eos_token_id"] = stops }
        if let pad = assets.padTokenID { g["pad_token_id"] = Int(pad) }
        let d = assets.generation
        if let t = d.temperature { g["temperature"] = t; g["do_sample"] = t > 0 }
        if let k = d.topK { g["top_k"] = k }
        if let p = d.topP { g["top_p"] = p }
        if let r = d.repetitionPenalty { g["repetition_penalty"] = r }
        if let n = d.maxNewTokens { g["max_new_tokens"] = n }
        try writeJSON(g, to: directory + "/generation_config.json")
    }

    /// tokenizer.json rebuilt from a GGUF file's `tokenizer.ggml.*` keys.
    static func tokenizerJSON(gguf meta: [String: GGUFValue], tokenizer: BPETokenizer, path: String) throws -> Data {
        guard let tokens = meta["tokenizer.ggml.tokens"]?.stringArray,
              let merges = meta["tokenizer.ggml.merges"]?.stringArray else {
            throw TokenizerLoaderError.missingKey(path: path, key: "tokenizer.ggml.tokens", expected: "a vocabulary and merges")
        }
        let types = meta["tokenizer.ggml.token_type"]?.intArray ?? []
        var vocab: [String: Int] = [:]
        var added: [[String: Any]] = []
        for (id, token) in tokens.enumerated() {
            let type = id < types.count ? types[id] : 1
            if type == 5 { continue }  // unused slots
            if vocab[token] == nil { vocab[token] = id }
            if type == 3 || type == 4 {
                added.append(["id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": type == 4, "special": type == 3])
            }
        }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        let kind = tokenizer.preTokenizer
        let pre: [String: Any]
        switch kind {
        case .gpt2:
            pre = byteLevel
        case .smollm:
            pre = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]]
        case .llama3, .qwen2:
            var level = byteLevel
            level["use_regex"] = false
            pre = ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": PreTokenizerKind.splitPattern(kind)], "behavior": "Isolated", "invert": false],
                level]]
        }
        // BOS / EOS added around each sequence, as the GGUF's add_bos_token / add_eos_token say.
        let postProcessor: Any
        if tokenizer.addBOS || tokenizer.addEOS {
            var single: [[String: Any]] = [], pair: [[String: Any]] = [], specials: [String: Any] = [:]
            func special(_ id: Int32?) -> [String: Any]? {
                guard let id else { return nil }
                let name = tokenizer.tokenString(id)
                specials[name] = ["id": name, "ids": [Int(id)], "tokens": [name]]
                return ["SpecialToken": ["id": name, "type_id": 0]]
            }
            let bos = tokenizer.addBOS ? special(tokenizer.bosTokenID) : nil
            let eos = tokenizer.addEOS ? special(tokenizer.eosTokenID) : nil
            for (sequence, typeID) in [("A", 0), ("B", 1)] {
                var part: [[String: Any]] = []
                if let bos { part.append(bos) }
                part.append(["Sequence": ["id": sequence, "type_id": typeID]])
                if let eos { part.append(eos) }
                if sequence == "A" { single = part }
                pair += part
            }
            postProcessor = ["type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials]
        } else {
            postProcessor = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
        }
        let root: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": tokenizer.normalizesNFC ? ["type": "NFC"] : NSNull(),
            "pre_tokenizer": pre, "post_processor": postProcessor,
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": tokenizer.ignoresMerges, "vocab": vocab, "merges": merges] as [String: Any],
        ]
        return try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys, .withoutEscapingSlashes])
    }

    static func writeJSON(_ object: [String: Any], to path: String) throws {
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]), to: path)
    }
}

// What a run leaves in final/ and best/: directories the Hugging Face ecosystem and dtrain load
// without the run's other files.
//   LoRA:  adapter_config.json + adapter_model.safetensors (PEFT) + the tokenizer files
//   full:  config.json + model.safetensors (float32) + generation_config.json + the tokenizer files
import DTrainCore
import Foundation

/// Saves trained weights in the formats the Hugging Face ecosystem loads.
public enum ModelExport {
    /// A PEFT adapter directory for `assets`' model. `base_model_name_or_path` is the model's
    /// Hugging Face id when its files name it, else `modelPath` as the run config gave it.
    public static func writeAdapter(_ lora: LoRAAdapters, assets: ModelAssets, modelPath: String, chatTemplate: String?,
                                    to directory: String) throws {
        try PEFTAdapter.write(lora, baseModel: assets.huggingFaceID ?? modelPath, to: directory)
        try TokenizerFiles.write(assets, chatTemplate: chatTemplate, to: directory)
    }

    /// A complete Hugging Face model directory.
    public static func writeModel(config: LlamaConfig, layout: ParameterLayout, params: FloatBuffer, assets: ModelAssets,
                                  chatTemplate: String?, dtype: SafetensorsWriter.DType = .f32, to directory: String) throws {
        let tensors = layout.specs.map { SafetensorsWriter.Tensor(name: $0.name, shape: $0.shape, values: params.pointer(at: $0.offset)) }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], dtype: dtype, to: directory + "/model.safetensors")
        var hf: [String: Any] = [
            "architectures": [config.architecture == "qwen2" ? "Qwen2ForCausalLM" : config.architecture == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"],
            "model_type": config.architecture, "vocab_size": config.vocabSize, "hidden_size": config.hiddenSize,
            "intermediate_size": config.intermediateSize, "num_hidden_layers": config.numLayers,
            "num_attention_heads": config.numHeads, "num_key_value_heads": config.numKVHeads, "head_dim": config.headDim,
            "rope_theta": config.ropeTheta, "rms_norm_eps": config.rmsNormEps, "tie_word_embeddings": config.tieWordEmbeddings,
            "attention_bias": config.attentionBias, "max_position_embeddings": config.maxPositionEmbeddings,
            "hidden_act": "silu", "torch_dtype": dtype.torchName, "use_cache": true,
        ]
        if let bos = assets.tokenizer.bosTokenID { hf["bos_token_id"] = Int(bos) }
        if let eos = assets.tokenizer.eosTokenID { hf["eos_token_id"] = Int(eos) }
        try TokenizerFiles.writeJSON(hf, to: directory + "/config.json")
        try TokenizerFiles.writeGenerationConfig(assets, to: directory)
        try TokenizerFiles.write(assets, chatTemplate: chatTemplate, to: directory)
    }
}

extension ModelExport {
    /// `general.file_type` (llama.cpp's `llama_ftype`) of a file whose matrices are `type`.
    static func fileType(_ type: GGMLType) -> UInt32 {
        switch type {
        case .f16: return 1
        case .q8_0: return 7
        default: return 0
        }
    }

    /// The model as one GGUF v3 file llama.cpp loads: its hyper-parameters, the tokenizer
    /// (vocabulary, token types, merges, pre-tokenizer, special ids, add_bos/add_eos, chat
    /// template), the matrices as `type` (norms and biases stay F32), and for architecture
    /// `llama` q/k rows in llama.cpp's order (the converter's permutation, see GGUFLlamaLoader).
    public static func writeGGUF(config: LlamaConfig, layout: ParameterLayout, params: FloatBuffer, assets: ModelAssets,
                                 chatTemplate: String?, type: GGMLType, name: String, to path: String) throws {
        let arch = config.architecture
        var meta: [(String, GGUFValue)] = [
            ("general.architecture", .string(arch)),
            ("general.name", .string(name)),
            ("general.file_type", .uint32(fileType(type))),
            ("general.quantization_version", .uint32(2)),
            ("\(arch).vocab_size", .uint32(UInt32(config.vocabSize))),
            ("\(arch).context_length", .uint32(UInt32(config.maxPositionEmbeddings))),
            ("\(arch).embedding_length", .uint32(UInt32(config.hiddenSize))),
            ("\(arch).block_count", .uint32(UInt32(config.numLayers))),
            ("\(arch).feed_forward_length", .uint32(UInt32(config.intermediateSize))),
            ("\(arch).attention.head_count", .uint32(UInt32(config.numHeads))),
            ("\(arch).attention.head_count_kv", .uint32(UInt32(config.numKVHeads))),
            ("\(arch).attention.key_length", .uint32(UInt32(config.headDim))),
            ("\(arch).attention.value_length", .uint32(UInt32(config.headDim))),
            ("\(arch).attention.layer_norm_rms_epsilon", .float32(config.rmsNormEps)),
            ("\(arch).rope.freq_base", .float32(config.ropeTheta)),
            ("\(arch).rope.dimension_count", .uint32(UInt32(config.headDim))),
        ]
        meta += try tokenizerMetadata(assets, chatTemplate: chatTemplate)
        // q/k rows reordered for llama.cpp's RoPE: GGUF row h·HD + 2i + s holds HF row h·HD + s·HD/2 + i.
        var permuted: [FloatBuffer] = []
        var tensors: [GGUFWriter.Tensor] = []
        for spec in layout.specs {
            let (ggufName, heads) = GGUFLlamaLoader.ggufName(for: spec.name, config: config)
            var values = UnsafePointer(params.pointer(at: spec.offset))
            if arch == "llama", let heads {
                let rows = spec.shape[0], width = spec.shape.count > 1 ? spec.shape[1] : 1
                let hd = rows / heads, half = hd / 2
                let copy = FloatBuffer(count: spec.count)
                for g in 0..<rows {
                    let h = g / hd, r = g % hd
                    (copy.base + g * width).update(from: values + (h * hd + (r % 2) * half + r / 2) * width, count: width)
                }
                permuted.append(copy)
                values = UnsafePointer(copy.base)
            }
            tensors.append(GGUFWriter.Tensor(name: ggufName, shape: spec.shape, type: spec.shape.count > 1 ? type : .f32, values: values))
        }
        try withExtendedLifetime(permuted) {
            try GGUFWriter.write(metadata: meta, tensors: tensors, to: path)
        }
    }

    /// `tokenizer.ggml.*` and the chat template: copied from a GGUF source (the template
    /// replaced by `chatTemplate` when given), rebuilt from tokenizer.json for a Hugging Face one.
    static func tokenizerMetadata(_ assets: ModelAssets, chatTemplate: String?) throws -> [(String, GGUFValue)] {
        let template = chatTemplate ?? assets.chatTemplateSource
        var out: [(String, GGUFValue)] = []
        if let source = assets.ggufMetadata {
            for key in source.keys.sorted() where key.hasPrefix("tokenizer.") && key != "tokenizer.chat_template" {
                out.append((key, source[key]!))
            }
        } else {
            let path = URL(fileURLWithPath: assets.path).appendingPathComponent("tokenizer.json").path
            guard let data = FileManager.default.contents(atPath: path),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let model = json["model"] as? [String: Any], let vocab = model["vocab"] as? [String: Int] else {
                throw TokenizerLoaderError.unreadable(path: path, reason: "expected a byte-level BPE tokenizer.json with model.vocab")
            }
            let tokenizer = assets.tokenizer
            var tokens = [String](repeating: "", count: tokenizer.vocabSize)
            var types = [GGUFValue](repeating: .int32(1), count: tokenizer.vocabSize)
            for (token, id) in vocab where id < tokens.count { tokens[id] = token }
            for added in json["added_tokens"] as? [[String: Any]] ?? [] {
                guard let id = added["id"] as? Int, id < tokens.count, let content = added["content"] as? String else { continue }
                tokens[id] = content
                types[id] = .int32((added["special"] as? Bool ?? false) ? 3 : 4)
            }
            let merges: [String] = (model["merges"] as? [Any] ?? []).compactMap {
                if let s = $0 as? String { return s }
                if let pair = $0 as? [String], pair.count == 2 { return pair[0] + " " + pair[1] }
                return nil
            }
            out += [("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string(tokenizer.preTokenizer.ggufName)),
                    ("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })), ("tokenizer.ggml.token_type", .array(types)),
                    ("tokenizer.ggml.merges", .array(merges.map { .string($0) })),
                    ("tokenizer.ggml.add_bos_token", .bool(tokenizer.addBOS)), ("tokenizer.ggml.add_eos_token", .bool(tokenizer.addEOS))]
            if let id = tokenizer.bosTokenID { out.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(id)))) }
            if let id = tokenizer.eosTokenID { out.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(id)))) }
            if let id = assets.padTokenID { out.append(("tokenizer.ggml.padding_token_id", .uint32(UInt32(id)))) }
            if let id = assets.unknownTokenID { out.append(("tokenizer.ggml.unknown_token_id", .uint32(UInt32(id)))) }
            if let eot = assets.stopTokenIDs.first(where: { $0 != tokenizer.eosTokenID }) {
                out.append(("tokenizer.ggml.eot_token_id", .uint32(UInt32(eot))))
            }
        }
        if let template { out.append(("tokenizer.chat_template", .string(template))) }
        return out
    }
}

// Llama-family models from GGUF: hyper-parameters from the metadata, weights into dtrain's flat
// Hugging Face-layout parameter buffer.
//
// Name map (llama.cpp -> Hugging Face):
//   token_embd.weight          -> model.embed_tokens.weight                    (V, C)
//   blk.N.attn_norm.weight     -> model.layers.N.input_layernorm.weight        (C)
//   blk.N.attn_q.weight/.bias  -> model.layers.N.self_attn.q_proj.weight/.bias (NH*HD, C)
//   blk.N.attn_k.weight/.bias  -> model.layers.N.self_attn.k_proj.weight/.bias (KVH*HD, C)
//   blk.N.attn_v.weight/.bias  -> model.layers.N.self_attn.v_proj.weight/.bias (KVH*HD, C)
//   blk.N.attn_output.weight   -> model.layers.N.self_attn.o_proj.weight       (C, NH*HD)
//   blk.N.ffn_norm.weight      -> model.layers.N.post_attention_layernorm.weight (C)
//   blk.N.ffn_gate/up.weight   -> model.layers.N.mlp.gate_proj/up_proj.weight  (F, C)
//   blk.N.ffn_down.weight      -> model.layers.N.mlp.down_proj.weight          (C, F)
//   output_norm.weight         -> model.norm.weight                            (C)
//   output.weight              -> lm_head.weight                               (V, C); absent when tied
// ggml lists extents innermost first, so an HF (out, in) weight has GGUF dims [in, out].
//
// Q/K row order. For architecture `llama`, convert_hf_to_gguf.py stores q_proj/k_proj (weights and
// biases) through `LlamaModel.permute(w, n_head, n_head_kv)`:
//   w.reshape(H, 2, HD/2, ...).swapaxes(1, 2).reshape(w.shape)
// so GGUF row h*HD + 2*i + s holds HF row h*HD + s*HD/2 + i (h < H heads, i < HD/2, s in {0, 1};
// H = NH for q, KVH for k). That interleaves the two rotate-half halves into adjacent pairs for
// llama.cpp's RoPE. dtrain's kernels use HF's rotate-half, so loading reads GGUF row
// h*HD + 2*i + s into HF row h*HD + s*HD/2 + i. qwen2 is converted without the permutation.
import DTrainCore
import Foundation

/// A GGUF file that cannot be turned into a dtrain Llama model; every case names the file.
public enum GGUFLlamaLoaderError: Error, CustomStringConvertible, Equatable {
    /// `general.architecture` names a model family dtrain does not implement.
    case unsupportedArchitecture(path: String, architecture: String)
    /// A required metadata key is absent or has the wrong type.
    case missingMetadata(path: String, key: String, expected: String)
    /// The hyper-parameters break a model rule (from `LlamaConfig.validate`).
    case invalidConfig(path: String, message: String)
    /// A tensor the layout needs is not in the file.
    case missingTensor(path: String, tensor: String, hfName: String, expectedDims: [Int])
    /// A tensor's extents differ from what the config implies.
    case shapeMismatch(path: String, tensor: String, hfName: String, expectedDims: [Int], foundDims: [Int])
    /// The destination buffer is smaller than the layout.
    case bufferTooSmall(path: String, needed: Int, got: Int)

    public var description: String {
        switch self {
        case let .unsupportedArchitecture(path, architecture):
            return "GGUF \(path): architecture \"\(architecture)\" is not supported; expected one of " +
                GGUFLlamaLoader.supportedArchitectures.joined(separator: ", ") +
                ". HINT: dtrain trains Llama-family decoders (Llama, SmolLM2, TinyLlama, Mistral, Qwen2)."
        case let .missingMetadata(path, key, expected):
            return "GGUF \(path): metadata \"\(key)\" is missing or not \(expected). HINT: re-convert the " +
                "model with a current llama.cpp convert_hf_to_gguf.py."
        case let .invalidConfig(path, message):
            return "GGUF \(path): the metadata describe an invalid model: \(message). HINT: check the " +
                "<arch>.* keys (e.g. with gguf-dump)."
        case let .missingTensor(path, tensor, hfName, expectedDims):
            return "GGUF \(path): tensor \"\(tensor)\" (\(hfName)) is missing; expected ggml dims " +
                "\(expectedDims). HINT: the file is incomplete or of another architecture than its " +
                "general.architecture says."
        case let .shapeMismatch(path, tensor, hfName, expectedDims, foundDims):
            return "GGUF \(path): tensor \"\(tensor)\" (\(hfName)) has ggml dims \(foundDims), expected " +
                "\(expectedDims) (ggml order, innermost first: HF (out, in) is [in, out]). HINT: the " +
                "metadata (embedding_length, feed_forward_length, head counts, key_length) disagree " +
                "with the tensors; the file is inconsistent."
        case let .bufferTooSmall(path, needed, got):
            return "GGUF \(path): the parameter buffer holds \(got) floats, the layout needs \(needed). " +
                "HINT: allocate FloatBuffer(count: layout.count) for the same config."
        }
    }
}

/// Reads Llama-family (`llama`, `qwen2`) configs and weights from GGUF files.
public enum GGUFLlamaLoader {
    /// Values of `general.architecture` this loader understands.
    public static let supportedArchitectures = ["llama", "qwen2"]

    /// The model's hyper-parameters from the file's metadata.
    ///
    /// Tied embeddings = no `output.weight` tensor; attention biases = a `blk.0.attn_q.bias` tensor.
    public static func config(from file: GGUFFile) throws -> LlamaConfig {
        let path = file.path
        guard let arch = file.metadata["general.architecture"]?.string else {
            throw GGUFLlamaLoaderError.missingMetadata(path: path, key: "general.architecture", expected: "a string")
        }
        guard supportedArchitectures.contains(arch) else {
            throw GGUFLlamaLoaderError.unsupportedArchitecture(path: path, architecture: arch)
        }
        func int(_ suffix: String) throws -> Int {
            let key = "\(arch).\(suffix)"
            guard let v = file.metadata[key]?.int else {
                throw GGUFLlamaLoaderError.missingMetadata(path: path, key: key, expected: "an integer")
            }
            return v
        }
        func optionalInt(_ suffix: String) -> Int? { file.metadata["\(arch).\(suffix)"]?.int }
        func float(_ suffix: String) throws -> Float {
            let key = "\(arch).\(suffix)"
            guard let v = file.metadata[key]?.float else {
                throw GGUFLlamaLoaderError.missingMetadata(path: path, key: key, expected: "a number")
            }
            return v
        }

        let hidden = try int("embedding_length")
        let numHeads = try int("attention.head_count")
        let vocab: Int
        if let v = optionalInt("vocab_size") {
            vocab = v
        } else if let tokens = file.metadata["tokenizer.ggml.tokens"]?.array {
            vocab = tokens.count
        } else if let embedding = file.tensors["token_embd.weight"], embedding.dims.count == 2 {
            vocab = embedding.dims[1]
        } else {
            throw GGUFLlamaLoaderError.missingMetadata(path: path, key: "\(arch).vocab_size",
                                                       expected: "an integer (nor is tokenizer.ggml.tokens present)")
        }
        let config = LlamaConfig(
            architecture: arch,
            vocabSize: vocab,
            hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"),
            numLayers: try int("block_count"),
            numHeads: numHeads,
            numKVHeads: optionalInt("attention.head_count_kv") ?? numHeads,
            headDim: optionalInt("attention.key_length"),
            ropeTheta: file.metadata["\(arch).rope.freq_base"]?.float ?? 10000,
            rmsNormEps: try float("attention.layer_norm_rms_epsilon"),
            tieWordEmbeddings: file.tensors["output.weight"] == nil,
            attentionBias: file.tensors["blk.0.attn_q.bias"] != nil,
            maxPositionEmbeddings: optionalInt("context_length") ?? 2048)
        do {
            try config.validate()
        } catch let error as ModelConfigError {
            throw GGUFLlamaLoaderError.invalidConfig(path: path, message: error.message)
        }
        if let ropeDims = optionalInt("rope.dimension_count"), ropeDims != config.headDim {
            throw GGUFLlamaLoaderError.invalidConfig(
                path: path, message: "rope.dimension_count \(ropeDims) differs from head_dim \(config.headDim); " +
                    "partial rotary embeddings are not supported")
        }
        return config
    }

    /// Dequantizes every tensor `layout` needs straight into its slot of `buffer`.
    ///
    /// Checks each tensor's extents against `config`, and for architecture `llama` restores Hugging
    /// Face's q/k row order (see the file header). No whole-model temporary is allocated.
    public static func loadWeights(from file: GGUFFile, config: LlamaConfig, layout: ParameterLayout,
                                   into buffer: FloatBuffer) throws {
        guard buffer.count >= layout.count else {
            throw GGUFLlamaLoaderError.bufferTooSmall(path: file.path, needed: layout.count, got: buffer.count)
        }
        let permute = config.architecture == "llama"
        for spec in layout.specs {
            let (ggufName, heads) = ggufName(for: spec.name, config: config)
            let expected = Array(spec.shape.reversed())  // ggml order
            guard let info = file.tensors[ggufName] else {
                throw GGUFLlamaLoaderError.missingTensor(path: file.path, tensor: ggufName, hfName: spec.name,
                                                         expectedDims: expected)
            }
            guard sameExtents(info.dims, expected) else {
                throw GGUFLlamaLoaderError.shapeMismatch(path: file.path, tensor: ggufName, hfName: spec.name,
                                                         expectedDims: expected, foundDims: info.dims)
            }
            let dst = buffer.pointer(at: spec.offset)
            if permute, let heads {
                try loadUnpermuted(file, info, hfShape: spec.shape, heads: heads, into: dst)
            } else {
                try file.dequantize(ggufName, into: dst, count: spec.count)
            }
        }
    }

    /// The llama.cpp name of an HF key, and for q/k (weight or bias) the head count of the
    /// converter's permutation.
    static func ggufName(for hfName: String, config: LlamaConfig) -> (String, heads: Int?) {
        switch hfName {
        case "model.embed_tokens.weight": return ("token_embd.weight", nil)
        case "model.norm.weight": return ("output_norm.weight", nil)
        case "lm_head.weight": return ("output.weight", nil)
        default: break
        }
        // model.layers.<N>.<rest>
        let parts = hfName.split(separator: ".", maxSplits: 3)
        precondition(parts.count == 4 && parts[0] == "model" && parts[1] == "layers",
                     "GGUFLlamaLoader: no GGUF name for layout key \(hfName)")
        let block = "blk.\(parts[2])."
        switch parts[3] {
        case "input_layernorm.weight": return (block + "attn_norm.weight", nil)
        case "self_attn.q_proj.weight": return (block + "attn_q.weight", config.numHeads)
        case "self_attn.q_proj.bias": return (block + "attn_q.bias", config.numHeads)
        case "self_attn.k_proj.weight": return (block + "attn_k.weight", config.numKVHeads)
        case "self_attn.k_proj.bias": return (block + "attn_k.bias", config.numKVHeads)
        case "self_attn.v_proj.weight": return (block + "attn_v.weight", nil)
        case "self_attn.v_proj.bias": return (block + "attn_v.bias", nil)
        case "self_attn.o_proj.weight": return (block + "attn_output.weight", nil)
        case "post_attention_layernorm.weight": return (block + "ffn_norm.weight", nil)
        case "mlp.gate_proj.weight": return (block + "ffn_gate.weight", nil)
        case "mlp.up_proj.weight": return (block + "ffn_up.weight", nil)
        case "mlp.down_proj.weight": return (block + "ffn_down.weight", nil)
        default: preconditionFailure("GGUFLlamaLoader: no GGUF name for layout key \(hfName)")
        }
    }

    /// Equal extents, allowing the file to carry extra outer extents of 1.
    static func sameExtents(_ found: [Int], _ expected: [Int]) -> Bool {
        guard found.count >= expected.count else { return false }
        return Array(found.prefix(expected.count)) == expected && found.dropFirst(expected.count).allSatisfy { $0 == 1 }
    }

    /// Loads a q/k weight (HF shape (heads*HD, C)) or bias (heads*HD) in HF row order:
    /// GGUF row h*HD + 2*i + s goes to HF row h*HD + s*HD/2 + i.
    static func loadUnpermuted(_ file: GGUFFile, _ info: GGUFTensorInfo, hfShape: [Int], heads: Int,
                               into dst: UnsafeMutablePointer<Float>) throws {
        let rows = hfShape[0]
        let width = hfShape.count > 1 ? hfShape[1] : 1   // floats per row: C, or 1 for a bias
        let headDim = rows / heads, halfDim = headDim / 2
        precondition(headDim * heads == rows && halfDim * 2 == headDim,
                     "GGUFLlamaLoader: \(info.name): \(rows) rows do not split into \(heads) heads of even size")
        @inline(__always) func hfRow(_ g: Int) -> Int {
            let h = g / headDim, r = g % headDim
            return h * headDim + (r % 2) * halfDim + r / 2
        }
        if hfShape.count > 1 {
            // Weight: a GGUF row (ne0 = C) is whole blocks; convert it straight into its HF row.
            for g in 0..<rows {
                try file.dequantizeRows(info, firstRow: g, rowCount: 1, into: dst + hfRow(g) * width)
            }
        } else {
            // Bias (a few hundred floats): convert, then scatter.
            let values = try file.floats(info.name)
            for g in 0..<rows { dst[hfRow(g)] = values[g] }
        }
    }
}

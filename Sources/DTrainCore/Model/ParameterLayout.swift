/// Where one named tensor lives inside a flat parameter buffer.
public struct ParameterSpec: Sendable, Equatable {
    /// Hugging Face key, e.g. `model.layers.3.self_attn.q_proj.weight`.
    public let name: String
    /// Shape in Hugging Face's layout: linear weights are (out, in).
    public let shape: [Int]
    /// Offset of the first float in the flat buffer.
    public let offset: Int
    /// Number of floats.
    public var count: Int { shape.reduce(1, *) }

    public init(name: String, shape: [Int], offset: Int) {
        self.name = name
        self.shape = shape
        self.offset = offset
    }
}

/// Offsets of one decoder layer's tensors inside the flat parameter buffer.
public struct LayerOffsets: Sendable, Equatable {
    public var inputNorm = 0      // (C)
    public var qWeight = 0        // (NH*HD, C)
    public var qBias: Int? = nil  // (NH*HD)
    public var kWeight = 0        // (KVH*HD, C)
    public var kBias: Int? = nil  // (KVH*HD)
    public var vWeight = 0        // (KVH*HD, C)
    public var vBias: Int? = nil  // (KVH*HD)
    public var oWeight = 0        // (C, NH*HD)
    public var postNorm = 0       // (C)
    public var gateWeight = 0     // (F, C)
    public var upWeight = 0       // (F, C)
    public var downWeight = 0     // (C, F)

    /// The weight of projection `t`, (out, in).
    public func weight(_ t: LoRATarget) -> Int {
        switch t {
        case .q_proj: return qWeight
        case .k_proj: return kWeight
        case .v_proj: return vWeight
        case .o_proj: return oWeight
        case .gate_proj: return gateWeight
        case .up_proj: return upWeight
        case .down_proj: return downWeight
        }
    }

    /// The bias of projection `t` (q/k/v in models with attention biases), else nil.
    public func bias(_ t: LoRATarget) -> Int? {
        switch t {
        case .q_proj: return qBias
        case .k_proj: return kBias
        case .v_proj: return vBias
        default: return nil
        }
    }
}

/// The table that maps every Hugging Face parameter key of a Llama model to a slot in one flat
/// buffer. Parameters, their gradients and AdamW's moments all use this same layout.
public struct ParameterLayout: Sendable {
    /// Every tensor, in Hugging Face's order.
    public let specs: [ParameterSpec]
    /// Total floats.
    public let count: Int
    /// Token embedding (V, C).
    public let embedding: Int
    /// Per-layer offsets.
    public let layers: [LayerOffsets]
    /// Final RMSNorm weight (C).
    public let finalNorm: Int
    /// LM head (V, C); equals `embedding` when the embeddings are tied.
    public let lmHead: Int

    /// Layer l's parameters, which lie together from its input norm up to the next layer's (the
    /// last layer's up to the final norm): what one layer's backward finishes.
    public var layerRanges: [Range<Int>] {
        layers.indices.map { l in layers[l].inputNorm..<(l + 1 < layers.count ? layers[l + 1].inputNorm : finalNorm) }
    }

    /// Builds the layout for `config`.
    public init(config: LlamaConfig) {
        var specs: [ParameterSpec] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            let spec = ParameterSpec(name: name, shape: shape, offset: offset)
            specs.append(spec)
            offset += spec.count
            return spec.offset
        }
        let C = config.hiddenSize, F = config.intermediateSize, V = config.vocabSize
        let qDim = config.qDim, kvDim = config.kvDim
        embedding = add("model.embed_tokens.weight", [V, C])
        var layers: [LayerOffsets] = []
        for l in 0..<config.numLayers {
            let p = "model.layers.\(l)."
            var o = LayerOffsets()
            o.inputNorm = add(p + "input_layernorm.weight", [C])
            o.qWeight = add(p + "self_attn.q_proj.weight", [qDim, C])
            if config.attentionBias { o.qBias = add(p + "self_attn.q_proj.bias", [qDim]) }
            o.kWeight = add(p + "self_attn.k_proj.weight", [kvDim, C])
            if config.attentionBias { o.kBias = add(p + "self_attn.k_proj.bias", [kvDim]) }
            o.vWeight = add(p + "self_attn.v_proj.weight", [kvDim, C])
            if config.attentionBias { o.vBias = add(p + "self_attn.v_proj.bias", [kvDim]) }
            o.oWeight = add(p + "self_attn.o_proj.weight", [C, qDim])
            o.postNorm = add(p + "post_attention_layernorm.weight", [C])
            o.gateWeight = add(p + "mlp.gate_proj.weight", [F, C])
            o.upWeight = add(p + "mlp.up_proj.weight", [F, C])
            o.downWeight = add(p + "mlp.down_proj.weight", [C, F])
            layers.append(o)
        }
        self.layers = layers
        finalNorm = add("model.norm.weight", [C])
        lmHead = config.tieWordEmbeddings ? embedding : add("lm_head.weight", [V, C])
        self.specs = specs
        self.count = offset
    }

    /// Number of weights that take part in matrix products (every linear and the LM head),
    /// the N of the 6·N·tokens FLOP estimate.
    public func matmulWeightCount(config: LlamaConfig) -> Int {
        let C = config.hiddenSize, F = config.intermediateSize
        let perLayer = C * config.qDim * 2 + C * config.kvDim * 2 + 3 * C * F
        return perLayer * config.numLayers + config.vocabSize * C
    }
}

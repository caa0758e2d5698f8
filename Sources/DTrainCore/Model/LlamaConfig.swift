/// Hyper-parameters of a Llama-family decoder (SmolLM2, TinyLlama, Llama 3, Mistral, Qwen2).
///
/// Shape letters used across dtrain: B batch, T sequence length, C `hiddenSize`,
/// NH `numHeads`, KVH `numKVHeads`, HD `headDim`, F `intermediateSize`, V `vocabSize`,
/// L `numLayers`, N = B*T tokens.
public struct LlamaConfig: Sendable, Equatable, Codable {
    /// Architecture name as the source file spells it (`llama`, `qwen2`, ...).
    public var architecture: String
    /// V.
    public var vocabSize: Int
    /// C.
    public var hiddenSize: Int
    /// F.
    public var intermediateSize: Int
    /// L.
    public var numLayers: Int
    /// NH.
    public var numHeads: Int
    /// KVH; NH must be a multiple of it.
    public var numKVHeads: Int
    /// HD; Llama derives it as C/NH, newer configs give it explicitly.
    public var headDim: Int
    /// RoPE base frequency.
    public var ropeTheta: Float
    /// RMSNorm epsilon.
    public var rmsNormEps: Float
    /// Whether the LM head reuses the token embedding matrix.
    public var tieWordEmbeddings: Bool
    /// Whether q/k/v projections carry biases (Qwen2).
    public var attentionBias: Bool
    /// Longest position the RoPE tables are built for by default.
    public var maxPositionEmbeddings: Int

    public init(architecture: String = "llama", vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
                numLayers: Int, numHeads: Int, numKVHeads: Int, headDim: Int? = nil,
                ropeTheta: Float = 10000, rmsNormEps: Float = 1e-5, tieWordEmbeddings: Bool = false,
                attentionBias: Bool = false, maxPositionEmbeddings: Int = 2048) {
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim ?? hiddenSize / max(numHeads, 1)
        self.ropeTheta = ropeTheta
        self.rmsNormEps = rmsNormEps
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.maxPositionEmbeddings = maxPositionEmbeddings
    }

    /// Checks the cross-field rules; the message names the offending field.
    public func validate() throws {
        func require(_ ok: Bool, _ message: String) throws {
            if !ok { throw ModelConfigError(message: message) }
        }
        try require(vocabSize > 0, "vocab_size must be positive, got \(vocabSize)")
        try require(hiddenSize > 0, "hidden_size must be positive, got \(hiddenSize)")
        try require(intermediateSize > 0, "intermediate_size must be positive, got \(intermediateSize)")
        try require(numLayers > 0, "num_hidden_layers must be positive, got \(numLayers)")
        try require(numHeads > 0 && numKVHeads > 0, "num_attention_heads and num_key_value_heads must be positive")
        try require(numHeads % numKVHeads == 0,
                    "num_attention_heads (\(numHeads)) must be a multiple of num_key_value_heads (\(numKVHeads))")
        try require(headDim > 0 && headDim % 2 == 0, "head_dim must be positive and even for RoPE, got \(headDim)")
    }

    /// NH*HD: width of the query projection and of the attention output.
    public var qDim: Int { numHeads * headDim }
    /// KVH*HD: width of the key and value projections.
    public var kvDim: Int { numKVHeads * headDim }
}

/// A model configuration that breaks a rule; `message` names the field.
public struct ModelConfigError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { "invalid model config: \(message)" }
}

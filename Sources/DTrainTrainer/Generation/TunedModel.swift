import DTrainCore
import DTrainData
import DTrainIO
import Foundation

/// A base model with trained weights applied, as every command that uses a fine-tune loads it
/// (eval, generate, chat, export): the base from a `.gguf` or Hugging Face directory, then a PEFT
/// adapter directory or a dtrain checkpoint (LoRA or full) trained from that base.
public struct TunedModel {
    public let assets: ModelAssets
    public let model: LlamaModel
    /// What was applied, for reports: "base weights", "adapter DIR (r 8, ...)", "checkpoint ...".
    public let weights: String

    /// Loads `modelPath` and applies `adapter` or `checkpoint` (at most one). With `merge`, LoRA
    /// adapters are added into the base weights (no adapter work per token; same outputs up to
    /// rounding); otherwise they run beside them.
    ///
    /// - Throws: the loaders' errors, each naming its file; `CheckpointError` for a checkpoint
    ///   trained from another base.
    public static func load(modelPath: String, adapter: String?, checkpoint: String?, merge: Bool = false) throws -> TunedModel {
        try load(assets: try ModelAssets.load(path: modelPath), adapter: adapter, checkpoint: checkpoint, merge: merge)
    }

    /// The same, for assets already read (a command that checks its data before the weights load).
    public static func load(assets: ModelAssets, adapter: String?, checkpoint: String?, merge: Bool = false) throws -> TunedModel {
        let modelPath = assets.path
        let config = try assets.requireConfig()
        let params = try assets.loadWeights()
        let model = LlamaModel(config: config, params: params)
        var weights = try LossEvaluation.applyWeights(adapter: adapter, checkpoint: checkpoint, to: model,
                                                      modelPath: modelPath, baseHash: Trainer.hash(params))
        if merge && model.lora != nil {
            model.mergeAdapters()
            weights += ", merged"
        }
        return TunedModel(assets: assets, model: model, weights: weights)
    }
}

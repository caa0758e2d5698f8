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
                                  chatTemplate: String?, to directory: String) throws {
        let tensors = layout.specs.map { SafetensorsWriter.Tensor(name: $0.name, shape: $0.shape, values: params.pointer(at: $0.offset)) }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: directory + "/model.safetensors")
        var hf: [String: Any] = [
            "architectures": [config.architecture == "qwen2" ? "Qwen2ForCausalLM" : config.architecture == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"],
            "model_type": config.architecture, "vocab_size": config.vocabSize, "hidden_size": config.hiddenSize,
            "intermediate_size": config.intermediateSize, "num_hidden_layers": config.numLayers,
            "num_attention_heads": config.numHeads, "num_key_value_heads": config.numKVHeads, "head_dim": config.headDim,
            "rope_theta": config.ropeTheta, "rms_norm_eps": config.rmsNormEps, "tie_word_embeddings": config.tieWordEmbeddings,
            "attention_bias": config.attentionBias, "max_position_embeddings": config.maxPositionEmbeddings,
            "hidden_act": "silu", "torch_dtype": "float32", "use_cache": true,
        ]
        if let bos = assets.tokenizer.bosTokenID { hf["bos_token_id"] = Int(bos) }
        if let eos = assets.tokenizer.eosTokenID { hf["eos_token_id"] = Int(eos) }
        try TokenizerFiles.writeJSON(hf, to: directory + "/config.json")
        try TokenizerFiles.writeGenerationConfig(assets, to: directory)
        try TokenizerFiles.write(assets, chatTemplate: chatTemplate, to: directory)
    }
}

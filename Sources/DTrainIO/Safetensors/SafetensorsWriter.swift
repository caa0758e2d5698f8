import DTrainCore
import Foundation

/// Writes float32 tensors as a safetensors file, atomically (temporary file, fsync, rename).
public enum SafetensorsWriter {
    /// One tensor to write: its key, shape and values.
    public struct Tensor {
        public let name: String
        public let shape: [Int]
        public let values: UnsafePointer<Float>
        public init(name: String, shape: [Int], values: UnsafePointer<Float>) {
            self.name = name; self.shape = shape; self.values = values
        }
    }

    public static func write(_ tensors: [Tensor], metadata: [String: String] = [:], to path: String) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * 4
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so the data starts 8-byte aligned.
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var body = Data(capacity: 8 + json.count + offset)
        var len = UInt64(json.count).littleEndian
        body.append(Data(bytes: &len, count: 8))
        body.append(json)
        for t in tensors { body.append(Data(bytes: t.values, count: t.shape.reduce(1, *) * 4)) }
        try AtomicFile.write(body, to: path)
    }
}

/// Saves trained weights in the formats the Hugging Face ecosystem loads.
public enum ModelExport {
    /// A PEFT LoRA adapter directory: adapter_model.safetensors + adapter_config.json.
    public static func writePEFTAdapter(_ lora: LoRAAdapters, baseModel: String, to directory: String) throws {
        let tensors = lora.specs.map {
            SafetensorsWriter.Tensor(name: "base_model.model." + $0.name, shape: $0.shape, values: lora.weights.pointer(at: $0.offset))
        }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: directory + "/adapter_model.safetensors")
        let config: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.config.rank, "lora_alpha": lora.config.alpha,
            "lora_dropout": lora.config.dropout, "use_rslora": lora.config.useRSLoRA, "bias": "none",
            "target_modules": lora.config.targets.map(\.rawValue), "base_model_name_or_path": baseModel,
            "fan_in_fan_out": false, "inference_mode": true,
        ]
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(json, to: directory + "/adapter_config.json")
    }

    /// A Hugging Face model directory: model.safetensors (float32) + config.json.
    public static func writeModel(config: LlamaConfig, layout: ParameterLayout, params: FloatBuffer, to directory: String) throws {
        let tensors = layout.specs.map { SafetensorsWriter.Tensor(name: $0.name, shape: $0.shape, values: params.pointer(at: $0.offset)) }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: directory + "/model.safetensors")
        let hf: [String: Any] = [
            "architectures": [config.architecture == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
            "model_type": config.architecture, "vocab_size": config.vocabSize, "hidden_size": config.hiddenSize,
            "intermediate_size": config.intermediateSize, "num_hidden_layers": config.numLayers,
            "num_attention_heads": config.numHeads, "num_key_value_heads": config.numKVHeads, "head_dim": config.headDim,
            "rope_theta": config.ropeTheta, "rms_norm_eps": config.rmsNormEps, "tie_word_embeddings": config.tieWordEmbeddings,
            "attention_bias": config.attentionBias, "max_position_embeddings": config.maxPositionEmbeddings,
            "hidden_act": "silu", "torch_dtype": "float32",
        ]
        let json = try JSONSerialization.data(withJSONObject: hf, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(json, to: directory + "/config.json")
    }
}

import Foundation

/// A projection a LoRA adapter can wrap, named as Hugging Face and PEFT name it.
public enum LoRATarget: String, CaseIterable, Codable, Sendable {
    case q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj

    /// (in, out) features of this projection.
    public func dims(_ c: LlamaConfig) -> (inFeatures: Int, outFeatures: Int) {
        switch self {
        case .q_proj: return (c.hiddenSize, c.qDim)
        case .k_proj, .v_proj: return (c.hiddenSize, c.kvDim)
        case .o_proj: return (c.qDim, c.hiddenSize)
        case .gate_proj, .up_proj: return (c.hiddenSize, c.intermediateSize)
        case .down_proj: return (c.intermediateSize, c.hiddenSize)
        }
    }

    /// Module path inside a layer: `self_attn.q_proj`, `mlp.gate_proj`, ...
    public var modulePath: String {
        switch self {
        case .q_proj, .k_proj, .v_proj, .o_proj: return "self_attn.\(rawValue)"
        default: return "mlp.\(rawValue)"
        }
    }

    /// Index in `allCases`, used to address per-target slots.
    public var index: Int { LoRATarget.allCases.firstIndex(of: self)! }
}

/// LoRA hyper-parameters.
public struct LoRAConfig: Sendable, Equatable, Codable {
    public var rank: Int
    public var alpha: Float
    public var dropout: Float
    /// rsLoRA: scale alpha/√r instead of alpha/r.
    public var useRSLoRA: Bool
    public var targets: [LoRATarget]

    /// No defaults here: the run config's `lora:` section holds them.
    public init(rank: Int, alpha: Float, dropout: Float, useRSLoRA: Bool, targets: [LoRATarget]) {
        self.rank = rank; self.alpha = alpha; self.dropout = dropout
        self.useRSLoRA = useRSLoRA; self.targets = targets
    }

    /// The factor applied to B·A·x.
    public var scale: Float { useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }
}

/// Every adapter of a model in one flat weight buffer and one flat gradient buffer.
///
/// Keys follow PEFT without its `base_model.model.` prefix and `.default` adapter name:
/// `model.layers.3.self_attn.q_proj.lora_A.weight` (r, in) and `...lora_B.weight` (out, r).
public final class LoRAAdapters {
    public let config: LoRAConfig
    /// Adapter tensors in layer order, A before B per target (offsets: a layer's A's, then its B's).
    public let specs: [ParameterSpec]
    /// All adapter weights.
    public let weights: FloatBuffer
    /// Their gradients, same layout.
    public let grads: FloatBuffer
    /// slots[layer][target.index] = (offset of A, offset of B), nil where no adapter.
    public let slots: [[(a: Int, b: Int)?]]
    /// Layer l's adapters, which lie together in the buffers.
    public let layerRanges: [Range<Int>]

    /// Allocates adapters for `model`: A Kaiming-uniform (PEFT's init, bound 1/√in) drawn from
    /// `seed`, B zero, so the adapted model starts equal to the base.
    public init(config: LoRAConfig, model: LlamaConfig, seed: UInt64) {
        self.config = config
        var specs: [ParameterSpec] = []
        var slots: [[(a: Int, b: Int)?]] = []
        var layerRanges: [Range<Int>] = []
        var offset = 0
        let r = config.rank
        // Within a layer every A comes first, in target order, then every B: adapters that read
        // the same input (q/k/v, gate/up) then have their A's stacked as one matrix, which
        // the model multiplies in one sgemm. `specs` keeps PEFT's A-then-B order per target.
        let present = LoRATarget.allCases.filter { config.targets.contains($0) }
        for l in 0..<model.numLayers {
            let layerStart = offset
            var row = [(a: Int, b: Int)?](repeating: nil, count: LoRATarget.allCases.count)
            var aOffsets: [Int] = []
            for t in present { aOffsets.append(offset); offset += r * t.dims(model).inFeatures }
            for (i, t) in present.enumerated() {
                let (inF, outF) = t.dims(model)
                let prefix = "model.layers.\(l).\(t.modulePath)"
                let a = ParameterSpec(name: prefix + ".lora_A.weight", shape: [r, inF], offset: aOffsets[i])
                let b = ParameterSpec(name: prefix + ".lora_B.weight", shape: [outF, r], offset: offset)
                offset += b.count
                specs += [a, b]
                row[t.index] = (a.offset, b.offset)
            }
            slots.append(row)
            layerRanges.append(layerStart..<offset)
        }
        self.specs = specs
        self.slots = slots
        self.layerRanges = layerRanges
        weights = FloatBuffer(count: offset)
        grads = FloatBuffer(count: offset)
        for (i, spec) in specs.enumerated() where spec.name.hasSuffix("lora_A.weight") {
            let bound = 1 / Float(spec.shape[1]).squareRoot()
            let key = CounterRandom.key(seed, 0x4C6F_5241, UInt64(i))
            let p = weights.pointer(at: spec.offset)
            for j in 0..<spec.count { p[j] = (2 * CounterRandom.uniform(key, j) - 1) * bound }
        }
    }
}

// A PEFT LoRA adapter directory, as PEFT's `save_pretrained` writes it and `PeftModel.from_pretrained`
// reads it:
//   adapter_config.json        peft_type "LORA", r, lora_alpha, use_rslora, target_modules, bias,
//                              fan_in_fan_out, base_model_name_or_path, ...
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight (r, in), ...lora_B.weight (out, r)
// dtrain reads adapters of the form it trains: plain LoRA (no DoRA, no per-module rank or alpha
// patterns, no bias, no extra trained modules) on the seven Llama projections.
import DTrainCore
import Foundation

/// An adapter directory that cannot be used; names the file and what was expected.
public struct PEFTAdapterError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }
}

/// A PEFT LoRA adapter read from a directory: its LoRA settings and its tensors.
public struct PEFTAdapter {
    public let directory: String
    public let config: LoRAConfig
    /// `base_model_name_or_path` as written.
    public let baseModel: String?
    private let file: SafetensorsFile

    static let keyPrefix = "base_model.model."

    /// Reads `adapter_config.json` and opens `adapter_model.safetensors`.
    public init(directory: String) throws {
        self.directory = directory
        let configPath = directory + "/adapter_config.json"
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw PEFTAdapterError(path: configPath, message: "cannot read it; expected a PEFT adapter directory "
                                   + "(adapter_config.json + adapter_model.safetensors), such as a LoRA run's final/ or best/")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw PEFTAdapterError(path: configPath, message: "not a JSON object")
        }
        func fail(_ message: String) -> PEFTAdapterError { PEFTAdapterError(path: configPath, message: message) }
        let type = json["peft_type"] as? String ?? "LORA"
        guard type == "LORA" else { throw fail("peft_type is \"\(type)\"; dtrain applies LORA adapters") }
        guard let rank = json["r"] as? Int, rank > 0 else { throw fail("\"r\" is missing or not a positive integer") }
        let alpha = (json["lora_alpha"] as? NSNumber)?.floatValue ?? Float(rank)
        if json["use_dora"] as? Bool == true { throw fail("use_dora is true; dtrain applies plain LoRA adapters") }
        if json["fan_in_fan_out"] as? Bool == true { throw fail("fan_in_fan_out is true; Llama projections are not Conv1D layers") }
        if let bias = json["bias"] as? String, bias != "none" { throw fail("bias is \"\(bias)\"; dtrain applies adapters without bias terms (\"none\")") }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let pattern = json[key] as? [String: Any], !pattern.isEmpty { throw fail("\(key) is set; dtrain applies one r and lora_alpha to every module") }
        }
        if let modules = json["modules_to_save"] as? [Any], !modules.isEmpty { throw fail("modules_to_save is set; dtrain applies LoRA weights only") }
        if json["layers_to_transform"] is [Any] || json["layers_to_transform"] is Int {
            throw fail("layers_to_transform is set; dtrain applies adapters to every layer")
        }
        let targets: [LoRATarget]
        switch json["target_modules"] {
        case let names as [String]:
            targets = try names.map { name in
                let last = name.split(separator: ".").last.map(String.init) ?? name
                guard let t = LoRATarget(rawValue: last) else {
                    throw fail("target module \"\(name)\" is not one of \(LoRATarget.allCases.map(\.rawValue))")
                }
                return t
            }
        case "all-linear" as String:
            targets = LoRATarget.allCases
        default:
            throw fail("target_modules must be a list of projection names (or \"all-linear\")")
        }
        let ordered = LoRATarget.allCases.filter { targets.contains($0) }
        config = LoRAConfig(rank: rank, alpha: alpha, dropout: (json["lora_dropout"] as? NSNumber)?.floatValue ?? 0,
                            useRSLoRA: json["use_rslora"] as? Bool ?? false, targets: ordered)
        baseModel = json["base_model_name_or_path"] as? String
        file = try SafetensorsFile(path: directory + "/adapter_model.safetensors")
    }

    /// Copies the adapter's tensors into `lora` (allocated for `config` on the model).
    public func load(into lora: LoRAAdapters) throws {
        var expected = Set<String>()
        for spec in lora.specs {
            // PEFT writes no adapter name; keys saved from a named adapter keep ".default".
            let key = Self.keyPrefix + spec.name
            let named = key.replacingOccurrences(of: ".weight", with: ".default.weight")
            let found = file.tensors[key] != nil ? key : file.tensors[named] != nil ? named : nil
            guard let found else {
                throw PEFTAdapterError(path: file.path, message: "tensor \(key) is missing: the adapter does not fit this model "
                                       + "(another architecture or layer count?)")
            }
            expected.insert(found)
            try file.read(found, into: lora.weights.pointer(at: spec.offset), expectedShape: spec.shape)
        }
        if let extra = file.tensors.keys.sorted().first(where: { !expected.contains($0) }) {
            throw PEFTAdapterError(path: file.path, message: "holds tensor \(extra), which this model's LoRA layout has no place for")
        }
    }

    /// Writes `lora` as a PEFT adapter directory; `baseModel` becomes `base_model_name_or_path`.
    public static func write(_ lora: LoRAAdapters, baseModel: String, to directory: String) throws {
        let tensors = lora.specs.map {
            SafetensorsWriter.Tensor(name: keyPrefix + $0.name, shape: $0.shape, values: lora.weights.pointer(at: $0.offset))
        }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: directory + "/adapter_model.safetensors")
        let config: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.config.rank, "lora_alpha": lora.config.alpha,
            "lora_dropout": lora.config.dropout, "use_rslora": lora.config.useRSLoRA, "bias": "none",
            "target_modules": lora.config.targets.map(\.rawValue), "base_model_name_or_path": baseModel,
            "fan_in_fan_out": false, "inference_mode": true, "use_dora": false, "modules_to_save": NSNull(),
        ]
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try AtomicFile.write(json, to: directory + "/adapter_config.json")
    }
}

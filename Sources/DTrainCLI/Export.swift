import ArgumentParser
import DTrainCore
import DTrainIO
import DTrainTrainer
import Foundation

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a fine-tune in a format the ecosystem loads: a PEFT adapter, a Hugging Face model, or GGUF.",
        discussion: """
            peft: adapter_config.json + adapter_model.safetensors (+ tokenizer files), for PEFT's \
            PeftModel.from_pretrained on the base model (LoRA only).
            hf: the merged model as a Hugging Face directory (config.json, model.safetensors, generation_config.json, \
            tokenizer.json, tokenizer_config.json with the chat template), for transformers' from_pretrained.
            gguf: the merged model as OUT/model.gguf (GGUF v3 with the tokenizer, special tokens and chat template), \
            for llama.cpp and Ollama.
            --dtype: f32 (default) for every format; f16 or bf16 for hf; f16 or q8_0 for gguf.
            The directory is written under a temporary name and renamed into place when complete; an existing \
            --out is an error unless --force (then it is replaced only once the new one is complete).
            Exit status: 0 done; 1 an error (named on stderr); 2 a usage error.
            """)
    @OptionGroup var model: ModelOptions
    @Option(help: "A PEFT adapter directory to export (without it or --checkpoint, hf and gguf convert the base model).") var adapter: String?
    @Option(help: "A dtrain checkpoint (.h5), LoRA or full, trained from --model.") var checkpoint: String?
    @Option(help: "peft, hf or gguf.") var format: String
    @Option(help: "The directory to write.") var out: String
    @Option(help: "Element type: f32, f16, bf16 (hf) or q8_0 (gguf).") var dtype = "f32"
    @Flag(help: "Replace --out if it exists.") var force = false
    @OptionGroup var threads: ThreadOptions

    enum Format: String { case peft, hf, gguf }

    func validate() throws {
        guard adapter == nil || checkpoint == nil else {
            throw ValidationError("--adapter and --checkpoint: give one of them, the weights to export")
        }
        guard let f = Format(rawValue: format) else { throw ValidationError("--format \(format): expected peft, hf or gguf") }
        guard f != .peft || adapter != nil || checkpoint != nil else {
            throw ValidationError("--format peft: give --checkpoint CKPT.h5 or --adapter DIR, the LoRA weights to export")
        }
        let allowed: [String] = f == .peft ? ["f32"] : f == .hf ? ["f32", "f16", "bf16"] : ["f32", "f16", "q8_0"]
        guard allowed.contains(dtype) else {
            throw ValidationError("--dtype \(dtype): --format \(format) takes \(allowed.joined(separator: ", "))")
        }
    }

    func run() throws {
        try runReportingErrors {
            let outPath = URL(fileURLWithPath: (out as NSString).expandingTildeInPath).standardizedFileURL.path
            let fm = FileManager.default
            if fm.fileExists(atPath: outPath) && !force {
                throw ExportError(message: "--out \(outPath) exists; HINT: pass --force to replace it, or choose another --out")
            }
            ComputeThreads.configure(threads.resolved)
            let start = now()
            let tuned = try TunedModel.load(modelPath: model.model, adapter: adapter, checkpoint: checkpoint)
            let f = Format(rawValue: format)!, llama = tuned.model, assets = tuned.assets
            if f == .peft && llama.lora == nil {
                throw ExportError(message: "--format peft needs LoRA weights; \(checkpoint ?? adapter ?? "") holds a full fine-tune. HINT: use --format hf or gguf")
            }
            let parent = (outPath as NSString).deletingLastPathComponent
            try FileOperation.createDirectory(parent)
            let temporary = outPath + ".tmp-\(getpid())"
            try? fm.removeItem(atPath: temporary)
            try FileOperation.createDirectory(temporary)
            do {
                switch f {
                case .peft:
                    try ModelExport.writeAdapter(llama.lora!, assets: assets, modelPath: model.model, chatTemplate: nil, to: temporary)
                case .hf:
                    llama.mergeAdapters()
                    try ModelExport.writeModel(config: llama.config, layout: llama.layout, params: llama.params, assets: assets,
                                               chatTemplate: nil, dtype: SafetensorsWriter.DType(rawValue: dtype.uppercased())!, to: temporary)
                case .gguf:
                    llama.mergeAdapters()
                    let type: GGMLType = dtype == "q8_0" ? .q8_0 : dtype == "f16" ? .f16 : .f32
                    let name = (assets.huggingFaceID ?? URL(fileURLWithPath: model.model).deletingPathExtension().lastPathComponent) + " (dtrain fine-tune)"
                    try ModelExport.writeGGUF(config: llama.config, layout: llama.layout, params: llama.params, assets: assets,
                                              chatTemplate: nil, type: type, name: name, to: temporary + "/model.gguf")
                }
                try replace(outPath, with: temporary)
            } catch {
                try? fm.removeItem(atPath: temporary)
                throw error
            }
            let bytes = (try? fm.subpathsOfDirectory(atPath: outPath))?.reduce(0) { total, name in
                total + ((try? fm.attributesOfItem(atPath: outPath + "/" + name)[.size] as? Int) ?? 0)
            } ?? 0
            print(String(format: "export: %@ with %@ -> %@ (%@, %@, %.1f MB) in %.1f s", model.model, tuned.weights, outPath, format, dtype,
                         Double(bytes) / 1e6, now() - start))
        }
    }

    /// Moves the finished `temporary` directory to `path`; an old `path` is moved aside first and
    /// removed only after the rename, so a failure leaves one of the two complete.
    func replace(_ path: String, with temporary: String) throws {
        let fm = FileManager.default
        var aside: String?
        if fm.fileExists(atPath: path) {
            aside = path + ".old-\(getpid())"
            try? fm.removeItem(atPath: aside!)
            guard rename(path, aside!) == 0 else { throw FileError(path: path, action: "move aside", errno: errno) }
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            if let aside { _ = rename(aside, path) }
            throw FileError(path: path, action: "rename \(temporary) to", errno: code)
        }
        if let aside { try? fm.removeItem(atPath: aside) }
    }
}

struct ExportError: Error, CustomStringConvertible {
    let message: String
    var description: String { "export: \(message)" }
}

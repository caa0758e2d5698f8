// What the `dtrain data` commands share: the model's tokenizer and chat template (no weights),
// and the data options resolved from defaults, then a run config's `data:` section, then flags.

import DTrainData
import DTrainIO
import Foundation
import Yams

/// A model's tokenizer and chat template, read without loading weights.
public struct DataModel {
    public let tokenizer: BPETokenizer
    /// The model's own template source (GGUF `tokenizer.chat_template`, or a Hugging Face
    /// directory's tokenizer_config.json `chat_template` / chat_template.jinja).
    public let chatTemplateSource: String?
    public let bosToken: String?
    public let eosToken: String?

    /// Reads the tokenizer and template of a `.gguf` file or a Hugging Face model directory.
    public static func load(path: String) throws -> DataModel {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw ModelPathError.notFound(path) }
        if !isDir.boolValue {
            let file = try GGUFFile(path: path)
            let tokenizer = try TokenizerLoader.fromGGUF(file)
            return DataModel(tokenizer: tokenizer, chatTemplateSource: file.metadata["tokenizer.chat_template"]?.string,
                             bosToken: tokenizer.bosTokenID.map(tokenizer.tokenString),
                             eosToken: tokenizer.eosTokenID.map(tokenizer.tokenString))
        }
        let dir = URL(fileURLWithPath: path)
        let tokenizer = try TokenizerLoader.fromHuggingFaceDirectory(dir)
        var source: String?
        var bos = tokenizer.bosTokenID.map(tokenizer.tokenString)
        var eos = tokenizer.eosTokenID.map(tokenizer.tokenString)
        if let data = try? Data(contentsOf: dir.appendingPathComponent("tokenizer_config.json")),
           let config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] {
            source = config["chat_template"] as? String
            func token(_ key: String, _ fallback: String?) -> String? {
                guard let value = config[key] else { return fallback }
                if let s = value as? String { return s }
                if let added = value as? [String: Any] { return added["content"] as? String }
                return nil
            }
            bos = token("bos_token", bos)
            eos = token("eos_token", eos)
        }
        if source == nil {
            source = try? String(contentsOf: dir.appendingPathComponent("chat_template.jinja"), encoding: .utf8)
        }
        return DataModel(tokenizer: tokenizer, chatTemplateSource: source, bosToken: bos, eosToken: eos)
    }

    /// The template to render with: `overridePath` (a .jinja or tokenizer_config.json) when
    /// given, else the model's own; nil when neither exists.
    public func chatTemplate(overridePath: String?, modelPath: String) throws -> ChatTemplateContext? {
        if let overridePath {
            return try ChatTemplateContext.load(file: overridePath, defaultBOS: bosToken, defaultEOS: eosToken)
        }
        guard let source = chatTemplateSource else { return nil }
        return try ChatTemplateContext(source: source, bosToken: bosToken, eosToken: eosToken, origin: modelPath)
    }
}

/// Data options as the `dtrain data` commands take them: a run config's `data:` section, then
/// the flags given on the command line (nil: not given).
public struct DataSettings {
    public var configPath: String?
    public var format: RecordFormat?
    public var columns: [String: String] = [:]
    public var roles: [String: String] = [:]
    public var trainOnInputs: Bool?
    public var promptCompletionTemplate: Bool?
    public var chatTemplate: String?
    public var maxSeqLen: Int?
    public var lengthPolicy: LengthPolicy?
    public var onError: ErrorPolicy?
    public var maxLineBytes: Int?

    public init() {}

    /// Defaults, then the config's `data:` keys, then the flags.
    public func resolve() throws -> DataOptions {
        var options = DataSection().options
        if let configPath { options = try DataSettings.readConfig(configPath) }
        if let format { options.reader.format = format }
        options.reader.columns.merge(columns) { _, flag in flag }
        options.reader.roles.merge(roles) { _, flag in flag }
        if let trainOnInputs { options.encoder.trainOnInputs = trainOnInputs }
        if let promptCompletionTemplate { options.encoder.promptCompletionUsesTemplate = promptCompletionTemplate }
        if let chatTemplate { options.chatTemplate = chatTemplate }
        if let maxSeqLen { options.maxSeqLen = maxSeqLen }
        if let lengthPolicy { options.lengthPolicy = lengthPolicy }
        if let onError { options.onError = onError }
        if let maxLineBytes { options.reader.maxLineBytes = maxLineBytes }
        try options.validate()
        return options
    }

    /// The `data:` section of a run config, decoded by the one schema `train` uses
    /// (`DataSection`); the other sections are the trainer's and not read here.
    public static func readConfig(_ path: String) throws -> DataOptions {
        struct RunFile: Decodable {
            let data: DataSection?
            enum CodingKeys: String, CodingKey { case data }
            init(from decoder: Decoder) throws {
                data = try decoder.container(keyedBy: CodingKeys.self).optional(.data, "a section")
            }
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DataFileError.cannotOpen(file: path, reason: (error as NSError).localizedDescription)
        }
        do {
            return try ConfigLoader.decode(RunFile.self, yaml: text, file: path, overrides: []).data?.options ?? DataSection().options
        } catch let error as ConfigError {
            // Syntax and read errors name the file themselves.
            let text = error.description, named = path + ": "
            throw DataConfigError(path: path, message: text.hasPrefix(named) ? String(text.dropFirst(named.count)) : text)
        }
    }

    /// Parses `a=b` pairs (`--column question=prompt`).
    public static func pairs(_ items: [String], flag: String) throws -> [String: String] {
        var out = [String: String]()
        for item in items {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw DataConfigError(path: "--\(flag)", message: "\"\(item)\" is not NAME=TARGET (e.g. --\(flag) question=prompt)")
            }
            out[parts[0]] = parts[1]
        }
        return out
    }
}

/// A config file's `data:` section that cannot be used.
public struct DataConfigError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }
}

/// Builds the encoder for a model and options, with the template they select (the model's own,
/// or `options.chatTemplate`), reading only the model's tokenizer and template.
public func makeDataEncoder(modelPath: String, options: DataOptions) throws -> ExampleEncoder {
    let model = try DataModel.load(path: modelPath)
    let template = try model.chatTemplate(overridePath: options.chatTemplate, modelPath: modelPath)
    return ExampleEncoder(tokenizer: model.tokenizer, template: template, options: options.encoder)
}

/// Builds the encoder for a model already loaded (the trainer's path): its tokenizer, and its
/// chat template unless `options.chatTemplate` names another; BOS / EOS strings are the
/// tokenizer's.
public func makeDataEncoder(model: LoadedModel, options: DataOptions) throws -> ExampleEncoder {
    let tokenizer = model.tokenizer
    let bos = tokenizer.bosTokenID.map(tokenizer.tokenString), eos = tokenizer.eosTokenID.map(tokenizer.tokenString)
    let template: ChatTemplateContext?
    if let path = options.chatTemplate {
        template = try ChatTemplateContext.load(file: path, defaultBOS: bos, defaultEOS: eos)
    } else if let source = model.chatTemplate {
        template = try ChatTemplateContext(source: source, bosToken: bos, eosToken: eos, origin: model.source)
    } else {
        template = nil
    }
    return ExampleEncoder(tokenizer: tokenizer, template: template, options: options.encoder)
}

/// Refuses to write `output` when it is one of `inputs` (the write would truncate the input
/// before it is read).
func checkNotAnInput(_ output: String, inputs: [String]) throws {
    let out = URL(fileURLWithPath: output).resolvingSymlinksInPath().standardizedFileURL.path
    for input in inputs where URL(fileURLWithPath: input).resolvingSymlinksInPath().standardizedFileURL.path == out {
        throw DataFileError.cannotWrite(file: output, reason: "it is also an input; HINT: write to another file")
    }
}

/// Buffered writes to standard output.
struct DataStdout {
    private var buffer = [UInt8]()

    mutating func line(_ s: String) {
        buffer.append(contentsOf: s.utf8)
        buffer.append(0x0A)
        if buffer.count > 1 << 20 { flush() }
    }

    mutating func flush() {
        guard !buffer.isEmpty else { return }
        FileHandle.standardOutput.write(Data(buffer))
        buffer.removeAll(keepingCapacity: true)
    }
}

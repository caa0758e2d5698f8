// What the `dtrain data` commands share with `train` and `eval`: the encoder built from a model's
// assets, and the data options resolved from defaults, then a run config's `data:` section, then flags.

import DTrainCore
import DTrainData
import DTrainIO
import Foundation
import Yams

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
        do { text = String(decoding: try FileOperation.read(path, mapped: false), as: UTF8.self) } catch let error as FileError {
            throw DataFileError.cannotOpen(file: path, reason: error.cause)
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

/// Builds the encoder for a model's assets and data options: the model's tokenizer, and the
/// template `options.chatTemplate` names or else the model's own (`ModelAssets.chatTemplate`).
/// `train`, `eval` and the data commands all encode through here.
public func makeDataEncoder(assets: ModelAssets, options: DataOptions) throws -> ExampleEncoder {
    let template = try assets.chatTemplate(overridePath: options.chatTemplate)
    return ExampleEncoder(tokenizer: assets.tokenizer, template: template, options: options.encoder)
}

/// The encoder for the model at `modelPath`, read without its weights.
public func makeDataEncoder(modelPath: String, options: DataOptions) throws -> ExampleEncoder {
    try makeDataEncoder(assets: try ModelAssets.load(path: modelPath), options: options)
}

// Building the byte-level BPE tokenizer from the two places a model's tokenizer lives: the
// `tokenizer.ggml.*` keys of a GGUF file, or a Hugging Face model directory's tokenizer.json
// (+ tokenizer_config.json).
//
// GGUF keys read:
//   tokenizer.ggml.model         "gpt2" (byte-level BPE); "llama" (SentencePiece) and others are refused
//   tokenizer.ggml.tokens        [string], the vocabulary in GPT-2's byte alphabet
//   tokenizer.ggml.merges        [string] "a b", rank = index
//   tokenizer.ggml.token_type    [int32] 1 normal, 3 control, 4 user-defined, ... (optional)
//   tokenizer.ggml.pre           pre-tokenizer name (optional; absent = "default" = GPT-2's split)
//   tokenizer.ggml.bos_token_id, .eos_token_id, .add_bos_token, .add_eos_token (optional)
import DTrainCore
import DTrainData
import Foundation

/// A tokenizer that cannot be loaded; every case names the file and says what was expected.
public enum TokenizerLoaderError: Error, CustomStringConvertible {
    /// A required `tokenizer.ggml.*` key is absent or of the wrong type.
    case missingKey(path: String, key: String, expected: String)
    /// `tokenizer.ggml.model` is not "gpt2".
    case unsupportedModel(path: String, model: String)
    /// A Hugging Face directory without tokenizer.json.
    case missingFile(path: String)
    /// A file that exists but cannot be read.
    case unreadable(path: String, reason: String)
    /// tokenizer.json was read but is not a usable byte-level BPE tokenizer.
    case invalidTokenizer(path: String, underlying: TokenizerError)

    public var description: String {
        switch self {
        case let .missingKey(path, key, expected):
            return "GGUF \(path): tokenizer key \"\(key)\" is missing or not \(expected). HINT: the file "
                + "carries no usable vocabulary; re-convert the model with llama.cpp's convert_hf_to_gguf.py, "
                + "or load the tokenizer from the Hugging Face model directory (tokenizer.json)."
        case let .unsupportedModel(path, model):
            return "GGUF \(path): tokenizer.ggml.model is \"\(model)\"; expected \"gpt2\" (byte-level BPE). "
                + "HINT: SentencePiece (\"llama\") and WordPiece (\"bert\") vocabularies are not supported; "
                + "use a model with a GPT-2-style tokenizer (Llama 3, Qwen2, SmolLM)."
        case let .missingFile(path):
            return "\(path): no such file. HINT: a Hugging Face model directory needs tokenizer.json "
                + "(tokenizer_config.json is optional); download it with the model."
        case let .unreadable(path, reason):
            return "\(path): cannot read: \(reason). HINT: check the path and permissions."
        case let .invalidTokenizer(path, underlying):
            return "\(path): \(underlying)"
        }
    }
}

/// Loads `BPETokenizer`s from model files.
public enum TokenizerLoader {
    /// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    ///
    /// - Throws: `TokenizerLoaderError` when keys are missing or the vocabulary is not byte-level
    ///   BPE; `TokenizerError.unknownPreTokenizer` for a `tokenizer.ggml.pre` without a splitter.
    public static func fromGGUF(_ file: GGUFFile) throws -> BPETokenizer {
        let meta = file.metadata
        let path = file.path
        guard let model = meta["tokenizer.ggml.model"]?.string else {
            throw TokenizerLoaderError.missingKey(path: path, key: "tokenizer.ggml.model", expected: "a string")
        }
        guard model == "gpt2" else { throw TokenizerLoaderError.unsupportedModel(path: path, model: model) }
        guard let tokens = meta["tokenizer.ggml.tokens"]?.stringArray, !tokens.isEmpty else {
            throw TokenizerLoaderError.missingKey(path: path, key: "tokenizer.ggml.tokens", expected: "a non-empty string array")
        }
        guard let merges = meta["tokenizer.ggml.merges"]?.stringArray else {
            throw TokenizerLoaderError.missingKey(path: path, key: "tokenizer.ggml.merges", expected: "a string array")
        }
        var types: [Int]?
        if let value = meta["tokenizer.ggml.token_type"] {
            guard let list = value.intArray, list.count == tokens.count else {
                throw TokenizerLoaderError.missingKey(path: path, key: "tokenizer.ggml.token_type",
                                                      expected: "an int array of \(tokens.count) entries (one per token)")
            }
            types = list
        }
        var kind = PreTokenizerKind.default
        if let value = meta["tokenizer.ggml.pre"] {
            guard let name = value.string else {
                throw TokenizerLoaderError.missingKey(path: path, key: "tokenizer.ggml.pre", expected: "a string")
            }
            kind = try PreTokenizerKind(ggufName: name)
        }
        let bos = try optionalInt(meta, "tokenizer.ggml.bos_token_id", path: path)
        let eos = try optionalInt(meta, "tokenizer.ggml.eos_token_id", path: path)
        let addBOS = try optionalBool(meta, "tokenizer.ggml.add_bos_token", path: path) ?? kind.addsBOSByDefault
        let addEOS = try optionalBool(meta, "tokenizer.ggml.add_eos_token", path: path) ?? false
        return BPETokenizer(tokens: tokens, merges: merges, tokenTypes: types, preTokenizer: kind,
                            bosTokenID: bos, eosTokenID: eos, addBOS: addBOS, addEOS: addEOS, specialTokens: nil)
    }

    /// The tokenizer of a Hugging Face model directory: `tokenizer.json`, with
    /// `tokenizer_config.json` (when present) deciding BOS/EOS and whether they are added.
    public static func fromHuggingFaceDirectory(_ url: URL) throws -> BPETokenizer {
        let jsonURL = url.appendingPathComponent("tokenizer.json")
        let configURL = url.appendingPathComponent("tokenizer_config.json")
        guard FileManager.default.fileExists(atPath: jsonURL.path) else {
            throw TokenizerLoaderError.missingFile(path: jsonURL.path)
        }
        let data = try read(jsonURL)
        let config = FileManager.default.fileExists(atPath: configURL.path) ? try read(configURL) : nil
        do {
            return try BPETokenizer.fromHuggingFaceJSON(data, config: config)
        } catch let error as TokenizerError {
            throw TokenizerLoaderError.invalidTokenizer(path: url.path, underlying: error)
        }
    }

    private static func read(_ url: URL) throws -> Data {
        do { return try FileOperation.read(url.path, mapped: false) } catch let error as FileError {
            throw TokenizerLoaderError.unreadable(path: url.path, reason: error.cause)
        }
    }

    private static func optionalInt(_ meta: [String: GGUFValue], _ key: String, path: String) throws -> Int? {
        guard let value = meta[key] else { return nil }
        guard let i = value.int else { throw TokenizerLoaderError.missingKey(path: path, key: key, expected: "an integer") }
        return i
    }

    private static func optionalBool(_ meta: [String: GGUFValue], _ key: String, path: String) throws -> Bool? {
        guard let value = meta[key] else { return nil }
        guard let b = value.bool else { throw TokenizerLoaderError.missingKey(path: path, key: key, expected: "a bool") }
        return b
    }
}

/// Why a tokenizer could not be built; every case says what was expected and how to go on.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    /// A GGUF `tokenizer.ggml.pre` value this tokenizer has no pre-tokenizer for.
    case unknownPreTokenizer(name: String)
    /// A `tokenizer.json` that is not JSON, or lacks a field (`path` is a JSON path like `model.vocab`).
    case invalidJSON(path: String, problem: String)
    /// A `tokenizer.json` whose model is not byte-level BPE (WordPiece, Unigram, SentencePiece-style BPE).
    case unsupportedModel(found: String)
    /// A `tokenizer.json` pre-tokenizer whose steps or split regex match none of the known kinds.
    case unsupportedPreTokenizer(found: String)
    /// A `tokenizer.json` normalizer other than none or NFC.
    case unsupportedNormalizer(found: String)

    public var description: String {
        switch self {
        case .unknownPreTokenizer(let name):
            return "unknown pre-tokenizer '\(name)' (tokenizer.ggml.pre); expected one of "
                + PreTokenizerKind.knownGGUFNames.joined(separator: ", ")
                + ". HINT: if the model's tokenizer.json uses the GPT-2, Llama 3, Qwen2 or SmolLM split regex, "
                + "add its name to PreTokenizerKind.init(ggufName:); otherwise its regex needs a new splitter."
        case .invalidJSON(let path, let problem):
            return "tokenizer.json: \(path): \(problem). HINT: the file should be a Hugging Face tokenizers "
                + "file (tokenizer.json, with model.vocab and model.merges), not tokenizer_config.json."
        case .unsupportedModel(let found):
            return "tokenizer.json: model is \(found); expected byte-level BPE (model.type \"BPE\" with a "
                + "ByteLevel pre-tokenizer). HINT: SentencePiece and WordPiece models are not supported; "
                + "load the model's GGUF instead if it carries a gpt2-style vocabulary."
        case .unsupportedPreTokenizer(let found):
            return "tokenizer.json: pre_tokenizer \(found) is not one of the known byte-level kinds "
                + "(GPT-2 ByteLevel, SmolLM Digits+ByteLevel, Llama 3 or Qwen2 Split+ByteLevel). "
                + "HINT: compare its Split regex with PreTokenizerKind's patterns; a new regex needs a new splitter."
        case .unsupportedNormalizer(let found):
            return "tokenizer.json: normalizer \(found) is not supported; expected null or NFC. "
                + "HINT: byte-level BPE tokenizers normally have no normalizer."
        }
    }
}

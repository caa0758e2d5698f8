import ArgumentParser
import DTrainData
import DTrainIO
import DTrainTrainer
import Foundation

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tokenize JSONL records with a `text` field; prints {\"ids\": [...], \"tokens\": N} per record.")
    @OptionGroup var model: ModelOptions
    @Flag(help: "Add BOS/EOS as the model's metadata says.") var addSpecialTokens = false
    @Argument(help: "JSONL file (default: standard input).") var file: String?

    func run() throws {
        try runReportingErrors { try tokenize() }
    }

    /// One `{"ids": [...], "tokens": N}` line per record, written in large chunks.
    func tokenize() throws {
        let tokenizer = try ModelAssets.load(path: model.model).tokenizer
        // The training pipeline's reader: gzip, a byte-order mark and CRLF are handled, and a bad
        // line is an error naming its file and line.
        var reader = try DataRecordReader(path: file ?? "-", options: ReaderOptions(format: .text))
        var out = ""
        try reader.forEachRecord { _, result in
            guard case .text(let text) = try result.get() else { return }
            let ids = tokenizer.encode(text, addSpecialTokens: addSpecialTokens)
            out += "{\"ids\":[" + ids.map(String.init).joined(separator: ",") + "],\"tokens\":\(ids.count)}\n"
            if out.utf8.count > 1 << 20 {
                FileHandle.standardOutput.write(Data(out.utf8))
                out = ""
            }
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}


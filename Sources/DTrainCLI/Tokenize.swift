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
        let records = try JSONLReader(path: file).texts()
        var out = ""
        out.reserveCapacity(records.count * 64)
        for rec in records {
            let ids = tokenizer.encode(rec.text, addSpecialTokens: addSpecialTokens)
            out += "{\"ids\":[" + ids.map(String.init).joined(separator: ",") + "],\"tokens\":\(ids.count)}\n"
            if out.utf8.count > 1 << 20 {
                FileHandle.standardOutput.write(Data(out.utf8))
                out = ""
            }
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}


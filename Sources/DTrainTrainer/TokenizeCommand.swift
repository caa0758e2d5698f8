import DTrainData
import DTrainIO
import Foundation

/// `dtrain tokenize`: JSONL `text` records in, one `{"ids": [...], "tokens": N}` line out per record.
public enum TokenizeCommand {
    public static func run(modelPath: String, input: String?, addSpecialTokens: Bool) throws {
        let tokenizer = try ModelAssets.load(path: modelPath).tokenizer
        let records = try JSONLReader(path: input).texts()
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

import DTrainData
import DTrainTrainer
import Foundation

/// `dtrain data render`: every record as the model will see it, one JSON line each.
extension DataCommand.Render {
    /// Prints `{"text", "ids", "loss_mask"}` per record (`loss_mask` left out with
    /// `addGenerationPrompt`), or `{"error": "file:line: ..."}` for a record that cannot be
    /// rendered. Returns false when any record gave an error (the command then exits non-zero).
    func render(settings: DataSettings) throws -> Bool {
        let options = try settings.resolve()
        let encoder = try makeDataEncoder(modelPath: model.model, options: options)
        var out = DataStdout()
        var errors = 0, noLoss = 0
        defer { out.flush() }
        for path in files {
            var reader = try DataRecordReader(path: path, options: options.reader)
            try reader.forEachRecord { line, result in
                let location = RecordLocation(file: path, line: line.number)
                do {
                    let record = try result.get()
                    let example: TokenizedExample
                    do {
                        let rendered = try encoder.render(record, addGenerationPrompt: addGenerationPrompt, allowNoLoss: true)
                        example = try encoder.tokenize(rendered, format: record.format)
                    } catch let error as NoChatTemplateError {
                        throw DataFileError.noChatTemplate(format: error.format, location: location)
                    } catch let problem as RecordProblem {
                        throw RecordError(location, problem)
                    }
                    out.line(JSONText.renderLine(example, includeMask: !addGenerationPrompt))
                    if !addGenerationPrompt && example.lossTokenCount == 0 {
                        noLoss += 1
                        if noLoss <= 5 {
                            printError("warning: \(location): no token carries loss (no assistant message); train skips such records "
                                       + "under data.on_error: skip and stops at them otherwise")
                        }
                    }
                } catch let error as RecordError {
                    errors += 1
                    out.line(JSONText.errorLine(error.description))
                }
            }
        }
        out.flush()
        if noLoss > 5 { printError("warning: \(noLoss) records in all carry no loss") }
        if errors > 0 { printError("render: \(errors) record\(errors == 1 ? "" : "s") gave an error (see the {\"error\": ...} lines)") }
        return errors == 0
    }
}

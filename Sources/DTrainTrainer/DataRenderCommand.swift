import DTrainData
import Foundation

/// `dtrain data render`: every record as the model will see it, one JSON line each.
public enum DataRenderCommand {
    /// Prints `{"text", "ids", "loss_mask"}` per record (`loss_mask` left out with
    /// `addGenerationPrompt`), or `{"error": "file:line: ..."}` for a record that cannot be
    /// rendered. Returns false when any record gave an error (the command then exits non-zero).
    public static func run(paths: [String], modelPath: String, settings: DataSettings, addGenerationPrompt: Bool) throws -> Bool {
        let options = try settings.resolve()
        let encoder = try makeDataEncoder(modelPath: modelPath, options: options)
        var out = DataStdout()
        var errors = 0
        defer { out.flush() }
        for path in paths {
            var reader = try DataRecordReader(path: path, options: options.reader)
            try reader.forEachRecord { line, result in
                let location = RecordLocation(file: path, line: line.number)
                do {
                    let record = try result.get()
                    let example: TokenizedExample
                    do {
                        let rendered = try encoder.render(record, addGenerationPrompt: addGenerationPrompt)
                        example = try encoder.tokenize(rendered, format: record.format)
                    } catch let error as NoChatTemplateError {
                        throw DataFileError.noChatTemplate(format: error.format, location: location)
                    } catch let problem as RecordProblem {
                        throw RecordError(location, problem)
                    }
                    out.line(JSONText.renderLine(example, includeMask: !addGenerationPrompt))
                } catch let error as RecordError {
                    errors += 1
                    out.line(JSONText.errorLine(error.description))
                }
            }
        }
        out.flush()
        if errors > 0 { printError("render: \(errors) record\(errors == 1 ? "" : "s") gave an error (see the {\"error\": ...} lines)") }
        return errors == 0
    }
}

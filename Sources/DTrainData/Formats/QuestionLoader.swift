import Foundation

/// A record's prompt, tokenized as training renders it up to where the answer starts, and the
/// reference answer (nil when the record has none: a text, a chat with no assistant message).
public struct Question: Sendable {
    public var location: RecordLocation
    public var format: RecordFormat
    /// Token ids of the prompt: the template's generation prompt included, BOS as training adds it.
    public var prompt: [Int32]
    public var answer: String?
    /// The record as read (classification renders it again with each label as its answer).
    public var record: DataRecord

    public init(location: RecordLocation, format: RecordFormat, prompt: [Int32], answer: String?, record: DataRecord) {
        self.location = location; self.format = format; self.prompt = prompt; self.answer = answer; self.record = record
    }
}

/// Reads data files as questions to answer (`dtrain generate --data`, eval's task metrics).
public enum QuestionLoader {
    /// Every record of `paths`, in order, as a `Question`. Records that cannot be read or
    /// rendered are counted in the report (or thrown, under `ErrorPolicy.fail`), as in training;
    /// a prompt longer than `maxPromptTokens` is an invalid record (`tooLong`).
    public static func load(paths: [String], encoder: ExampleEncoder, options: DataOptions,
                            maxPromptTokens: Int) throws -> (questions: [Question], report: DataReport) {
        var questions: [Question] = []
        var report = DataReport()
        for path in paths {
            var reader = try DataRecordReader(path: path, options: options.reader)
            var summary = DataReport.FileSummary(path: path, bytes: reader.bytes.count, format: nil, records: 0, invalid: 0)
            try reader.forEachRecord { line, result in
                if line.number > 0 { summary.records += 1 }
                let location = RecordLocation(file: path, line: line.number)
                do {
                    let record = try result.get()
                    let (question, answer) = record.questionAndAnswer
                    let prompt: [Int32]
                    do {
                        let rendered = try encoder.render(question, addGenerationPrompt: true)
                        prompt = try encoder.tokenize(rendered, format: question.format).ids
                    } catch let error as NoChatTemplateError {
                        throw DataFileError.noChatTemplate(format: error.format, location: location)
                    } catch let problem as RecordProblem {
                        throw RecordError(location, problem)
                    }
                    if prompt.count > maxPromptTokens {
                        throw RecordError(location, .tooLong(tokens: prompt.count, limit: maxPromptTokens))
                    }
                    report.recordsByFormat[record.format, default: 0] += 1
                    report.examples += 1
                    report.tokens += prompt.count
                    questions.append(Question(location: location, format: record.format, prompt: prompt, answer: answer, record: record))
                } catch let error as RecordError {
                    if options.onError == .fail { throw error }
                    summary.invalid += 1
                    report.addInvalid(error)
                }
            }
            summary.format = reader.format
            report.files.append(summary)
        }
        return (questions, report)
    }
}

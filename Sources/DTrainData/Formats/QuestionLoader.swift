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
        let report = try DataLoader.forEachRecord(paths: paths, options: options) { record, location, report in
            let q = try question(record, at: location, encoder: encoder, maxPromptTokens: maxPromptTokens)
            report.recordsByFormat[record.format, default: 0] += 1
            report.examples += 1
            report.tokens += q.prompt.count
            questions.append(q)
        }
        return (questions, report)
    }

    /// One record as a question: its prompt rendered and tokenized as training renders it up to
    /// the answer. - Throws: `RecordError` (a prompt over `maxPromptTokens` is `tooLong`),
    /// `DataFileError.noChatTemplate`.
    static func question(_ record: DataRecord, at location: RecordLocation, encoder: ExampleEncoder,
                         maxPromptTokens: Int) throws -> Question {
        let (question, answer) = record.questionAndAnswer
        let prompt = try DataLoader.encoded(record, at: location) {
            try encoder.tokenize(try encoder.render(question, addGenerationPrompt: true), format: question.format).ids
        }
        if prompt.count > maxPromptTokens {
            throw RecordError(location, .tooLong(tokens: prompt.count, limit: maxPromptTokens))
        }
        return Question(location: location, format: record.format, prompt: prompt, answer: answer, record: record)
    }
}

import ArgumentParser
import DTrainCore
import DTrainData
import DTrainIO
import DTrainTrainer
import Foundation

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk to a model (and a fine-tune's adapter or checkpoint) through its chat template.",
        discussion: """
            Each line you type is a user message; the answer streams as it is generated. Commands: /reset starts \
            the conversation again (the system message stays), /system TEXT sets the system message and starts \
            again, /quit (or end of input) ends. When stdin is not a terminal, lines are read one by one and each \
            answer is printed on its own line(s) followed by a blank line, so that a conversation can be scripted. \
            When the conversation outgrows the context, its oldest turns are left out. \
            Each turn runs only the tokens that follow what the model has already read (the earlier turns stay in \
            its key/value cache).
            Exit status: 0 done; 1 an error (named on stderr); 2 a usage error.
            """)
    @OptionGroup var model: ModelOptions
    @OptionGroup var tuned: TunedWeightOptions
    @Option(help: "A system message to start with.") var system: String?
    @Option(help: "A .jinja file or tokenizer_config.json whose chat template replaces the model's.") var chatTemplate: String?
    @OptionGroup var decoding: DecodingOptions
    @OptionGroup var threads: ThreadOptions

    func run() throws {
        try runReportingErrors {
            ComputeThreads.configure(threads.resolved)
            let tuned = try TunedModel.load(modelPath: model.model, adapter: self.tuned.adapter,
                                            checkpoint: self.tuned.checkpoint, merge: self.tuned.merge)
            let assets = tuned.assets
            guard let template = try assets.chatTemplate(overridePath: chatTemplate) else {
                throw ChatError(message: "\(model.model) has no chat template; HINT: pass --chat-template FILE.jinja")
            }
            let interactive = isatty(STDIN_FILENO) != 0
            let context = min(tuned.model.config.maxPositionEmbeddings, 4096)
            let generator = TextGenerator(model: tuned.model, tokenizer: assets.tokenizer, rows: 1, context: context)
            // Each turn's prompt is the whole conversation again: only its new end runs.
            generator.reusesCachedPrefix = true
            let options = decoding.options(assets: assets)
            var systemMessage = system
            var turns: [ChatTurn] = []
            if interactive {
                printError("chat: \(model.model) with \(tuned.weights); /reset, /system TEXT, /quit")
            }
            var index = 0
            while true {
                if interactive { FileHandle.standardError.write(Data("> ".utf8)) }
                guard let line = readLine(strippingNewline: true) else { break }
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.isEmpty { continue }
                if text == "/quit" || text == "/exit" { break }
                if text == "/reset" {
                    turns = []
                    if interactive { printError("(conversation reset)") }
                    continue
                }
                if text.hasPrefix("/system") {
                    let message = String(text.dropFirst("/system".count)).trimmingCharacters(in: .whitespaces)
                    systemMessage = message.isEmpty ? nil : message
                    turns = []
                    if interactive { printError(systemMessage == nil ? "(system message cleared)" : "(system message set; conversation reset)") }
                    continue
                }
                turns.append(ChatTurn(role: "user", content: line))
                // Leave out the oldest turns until the prompt and an answer fit the context.
                var prompt: [Int32] = []
                while true {
                    let all = (systemMessage.map { [ChatTurn(role: "system", content: $0)] } ?? []) + turns
                    prompt = assets.tokenizer.encode(try template.render(all, addGenerationPrompt: true))
                    if prompt.count + min(options.maxNewTokens, 64) < context || turns.count <= 1 { break }
                    turns.removeFirst(min(2, turns.count - 1))
                    if interactive { printError("(oldest turns left out to fit the context)") }
                }
                guard prompt.count < context else {
                    throw ChatError(message: "the message is \(prompt.count) tokens; the context holds \(context)")
                }
                let answer = generator.generate([prompt], options: options, firstIndex: index) { _, piece in
                    FileHandle.standardOutput.write(Data(piece.utf8))
                }[0]
                index += 1
                FileHandle.standardOutput.write(Data((interactive ? "\n" : "\n\n").utf8))
                turns.append(ChatTurn(role: "assistant", content: answer.text))
            }
        }
    }
}

struct ChatError: Error, CustomStringConvertible {
    let message: String
    var description: String { "chat: \(message)" }
}

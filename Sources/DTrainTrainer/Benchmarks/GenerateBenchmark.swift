import DTrainCore
import DTrainIO
import Foundation

/// Prompt and decoding throughput of the KV-cached decoder (`dtrain bench generate`).
public struct GenerateBenchmark {
    public let cpu: String
    public let threads: Int
    public let batch: Int
    public let promptTokens: Int
    public let newTokens: Int
    /// Prompt tokens per second over the rows' prompt passes (each row's prompt in chunks).
    public let promptTokensPerSecond: Double
    /// Generated tokens per second over the decoding passes (one token per row per pass).
    public let generatedTokensPerSecond: Double

    /// Loads `modelPath`, then for each of `repeats` rounds runs `batch` rows of a
    /// `promptTokens`-token prompt (deterministic pseudo-text) and `newTokens` greedy tokens per
    /// row with no stop token; reports the best round's rates.
    public static func measure(modelPath: String, batch: Int, promptTokens: Int, newTokens: Int, threads: Int,
                               repeats: Int, progress: (String) -> Void) throws -> GenerateBenchmark {
        ComputeThreads.configure(threads)
        progress(MachineKernels.summary)
        let loaded = try ModelLoader.load(path: modelPath)
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        let V = loaded.config.vocabSize
        let decoder = KVCacheDecoder(model: model, rows: batch, context: promptTokens + newTokens + 1)
        let key = CounterRandom.key(7)
        let prompt = (0..<promptTokens).map { Int32(CounterRandom.uniform(key, $0) * Float(V - 1)) }
        var bestPrompt = 0.0, bestDecode = 0.0
        for _ in 0..<max(1, repeats) {
            decoder.resetAll()
            var last = [Int32](repeating: 0, count: batch)
            let t0 = now()
            for row in 0..<batch {
                var at = 0
                while at < prompt.count {
                    let n = min(decoder.chunk, prompt.count - at)
                    let logits = decoder.append(Array(prompt[at..<(at + n)]), segments: [.init(row: row, count: n)])
                    if at + n == prompt.count { last[row] = TokenSampler.argmax(logits, V) }
                    at += n
                }
            }
            let t1 = now()
            let segments = (0..<batch).map { KVCacheDecoder.Segment(row: $0, count: 1) }
            for _ in 0..<newTokens {
                let logits = decoder.append(last, segments: segments)
                for row in 0..<batch { last[row] = TokenSampler.argmax(logits + row * V, V) }
            }
            let t2 = now()
            bestPrompt = max(bestPrompt, Double(batch * promptTokens) / (t1 - t0))
            bestDecode = max(bestDecode, Double(batch * newTokens) / (t2 - t1))
        }
        return GenerateBenchmark(cpu: MachineKernels.cpu.description, threads: threads, batch: batch, promptTokens: promptTokens,
                                 newTokens: newTokens, promptTokensPerSecond: bestPrompt, generatedTokensPerSecond: bestDecode)
    }

    public var json: [String: Any] {
        ["cpu": cpu, "threads": threads, "batch": batch, "prompt_tokens": promptTokens, "new_tokens": newTokens,
         "prompt_tokens_per_s": promptTokensPerSecond, "generated_tokens_per_s": generatedTokensPerSecond,
         "kernels": MachineKernels.summary]
    }

    public var line: String {
        String(format: "bench generate: batch %d, %d threads, prompt %d + %d new tokens | prompt %.1f tok/s | generated %.1f tok/s",
               batch, threads, promptTokens, newTokens, promptTokensPerSecond, generatedTokensPerSecond)
    }
}

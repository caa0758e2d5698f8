import DTrainData
import DTrainTrainer
import Foundation

/// `dtrain data check`: what training would make of data files, printed as text or one JSON object.
extension DataCommand.Check {
    /// Checks the files with `settings` (the flags resolved against --config); returns false when
    /// any record is invalid (the command then exits non-zero).
    func check(settings: DataSettings) throws -> Bool {
        let options = try settings.resolve()
        let encoder = try makeDataEncoder(modelPath: model.model, options: options)
        let start = now()
        let report = try DataChecker.check(paths: files, encoder: encoder,
                                           options: DataCheckOptions(data: options, findNearDuplicates: !noNearDuplicates))
        let seconds = now() - start
        let useColor = isatty(STDOUT_FILENO) != 0 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
        if json {
            print(jsonLine(Self.jsonObject(report, seconds: seconds, tokenizer: encoder.tokenizer)))
        } else {
            print(Self.text(report, seconds: seconds, tokenizer: encoder.tokenizer, color: useColor))
        }
        return !report.hasInvalid
    }

    /// The human-readable report.
    static func text(_ r: DataCheckReport, seconds: Double, tokenizer: BPETokenizer, color: Bool,
                            invalidShown: Int = 20) -> String {
        var out = [String]()
        let mb = Double(r.bytes) / 1e6
        out.append(String(format: "data check: %d file%@, %.1f MB in %.2f s (%.1f MB/s)", r.data.files.count,
                          r.data.files.count == 1 ? "" : "s", mb, seconds, seconds > 0 ? mb / seconds : 0))
        let width = r.data.files.map(\.path.count).max() ?? 0
        for f in r.data.files {
            let name = f.path.padding(toLength: max(width, 1), withPad: " ", startingAt: 0)
            let format = (f.format?.rawValue ?? "-").padding(toLength: 17, withPad: " ", startingAt: 0)
            out.append("  \(name)  \(format) \(f.records) records" + (f.invalid > 0 ? ", \(f.invalid) invalid" : ""))
        }
        let formats = RecordFormat.allCases.compactMap { f in r.data.recordsByFormat[f].map { "\(f) \($0)" } }
        out.append("records: \(r.data.validRecords) valid" + (formats.isEmpty ? "" : " (\(formats.joined(separator: ", ")))")
                   + ", \(r.data.invalidCount) invalid")
        if r.data.invalidCount > 0 {
            let kinds = r.data.invalidByKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            out.append("invalid (\(kinds)):")
            for e in r.data.invalidSamples.prefix(invalidShown) { out.append("  \(e)") }
            if r.data.invalidCount > invalidShown {
                out.append("  ... \(r.data.invalidCount - min(invalidShown, r.data.invalidSamples.count)) more "
                           + "(--json lists the first \(r.data.sampleLimit))")
            }
        }
        out.append("duplicates: \(r.exactDuplicates) exact, \(r.nearDuplicates) near (5-word shingles, Jaccard >= 0.80)")
        for d in r.duplicateSamples {
            if let j = d.jaccard {
                out.append("  \(d.location) is a near-duplicate of \(d.original) " + String(format: "(Jaccard %.2f)", j))
            } else {
                out.append("  \(d.location) repeats \(d.original)")
            }
        }
        let l = r.lengthSummary
        out.append("tokens per example: p50 \(l.p50), p90 \(l.p90), p99 \(l.p99), max \(l.max)")
        var policy = "max_seq_len \(r.maxSeqLen): \(r.overLength) example\(r.overLength == 1 ? "" : "s") longer"
        switch r.lengthPolicy {
        case .truncate:
            policy += " (length policy truncate: \(r.data.truncated) truncated, \(r.data.droppedNoLoss) dropped as "
                + "nothing that carries loss is left)"
        case .drop: policy += " (length policy drop: \(r.data.droppedTooLong) dropped)"
        case .error: policy += " (length policy error: each is an invalid record)"
        }
        out.append(policy)
        out.append(String(format: "loss: %.1f%% of %d tokens carry loss (%d examples after the length policy)",
                          r.lossFraction * 100, r.data.tokens, r.data.examples))
        if let first = r.firstExample {
            let shown = LossMaskDisplay.render(first.example, tokenizer: tokenizer, style: color ? .color : .brackets)
            let legend = color ? "green: carries loss" : "⟦…⟧: carries loss"
            out.append("first example (\(first.location), \(first.example.format), \(first.example.ids.count) tokens, "
                       + "\(first.example.lossTokenCount) carry loss; \(legend)):")
            out.append(shown)
        }
        return out.joined(separator: "\n")
    }

    /// The report as a JSON-compatible dictionary.
    static func jsonObject(_ r: DataCheckReport, seconds: Double, tokenizer: BPETokenizer) -> [String: Any] {
        let l = r.lengthSummary
        var object: [String: Any] = [
            "files": r.data.files.map { f -> [String: Any] in
                ["path": f.path, "bytes": f.bytes, "format": f.format?.rawValue ?? NSNull(), "records": f.records,
                 "invalid": f.invalid]
            },
            "records": Dictionary(uniqueKeysWithValues: r.data.recordsByFormat.map { ($0.key.rawValue, $0.value) }),
            "valid": r.data.validRecords,
            "invalid": r.data.invalidCount,
            "invalid_by_kind": r.data.invalidByKind,
            "invalid_records": r.data.invalidSamples.map { e -> [String: Any] in
                ["file": e.location.file, "line": e.location.line, "kind": e.problem.kind, "reason": e.problem.description]
            },
            "exact_duplicates": r.exactDuplicates,
            "near_duplicates": r.nearDuplicates,
            "duplicate_samples": r.duplicateSamples.map { d -> [String: Any] in
                ["record": d.location.description, "duplicates": d.original.description, "jaccard": d.jaccard ?? NSNull()]
            },
            "token_lengths": ["p50": l.p50, "p90": l.p90, "p99": l.p99, "max": l.max],
            "max_seq_len": r.maxSeqLen,
            "length_policy": r.lengthPolicy.rawValue,
            "over_max_seq_len": r.overLength,
            "truncated": r.data.truncated,
            "dropped_too_long": r.data.droppedTooLong,
            "dropped_no_loss": r.data.droppedNoLoss,
            "examples": r.data.examples,
            "tokens": r.data.tokens,
            "loss_tokens": r.data.lossTokens,
            "loss_fraction": r.lossFraction,
            "bytes": r.bytes,
            "seconds": seconds,
            "mb_per_s": seconds > 0 ? Double(r.bytes) / 1e6 / seconds : 0,
        ]
        if let first = r.firstExample {
            object["first_example"] = [
                "record": first.location.description,
                "format": first.example.format.rawValue,
                "text": first.example.text,
                "ids": first.example.ids.map(Int.init),
                "loss_mask": first.example.lossMask.map(Int.init),
                "shown": LossMaskDisplay.render(first.example, tokenizer: tokenizer, style: .brackets),
            ] as [String: Any]
        }
        return object
    }
}

import DTrainCore
import DTrainTestSupport
import Foundation
import Testing

/// dtrain runs OpenBLAS's widest kernels for the CPU whatever OpenBLAS picks by itself, and
/// keeps a kernel set the user names.
@Suite(.serialized) struct KernelSelectionTests {
    /// The first line of a run: "dtrain: N rank(s) x T thread(s); CPU ...; OpenBLAS kernels ...".
    func runLine(_ out: String) -> String {
        out.split(separator: "\n").first { $0.hasPrefix("dtrain: ") }.map(String.init) ?? ""
    }

    /// OpenBLAS forced into its SSE3 fallback (the test hook stands for a CPU model OpenBLAS does
    /// not know): every rank switches to the CPU's widest kernels before the first product, and
    /// the run line says so.
    @Test func fallbackKernelsAreReplaced() throws {
        let cpu = MachineKernels.cpu
        let best = try #require(MachineKernels.blasKernels(for: cpu.level), "this CPU has no AVX: \(cpu.description)")
        let run = try smallRun("kernels-fallback", method: "lora")
        let r = try runDTrain(ranks: 2, ["train", "--config", run.config, "--set", "train.max_steps=1"],
                              env: ["DTRAIN_TEST_BLAS_FALLBACK": "Prescott"], unset: ["OPENBLAS_CORETYPE"], timeout: 300)
        #expect(r.status == 0, "\(r.err)")
        let line = runLine(r.out)
        #expect(line.contains("CPU ") && line.contains("\(cpu.level)"), "\(line)")
        #expect(line.contains("OpenBLAS kernels \(best), \(cpu.level) (switched by dtrain from OpenBLAS's Prescott (test hook))"),
                "\(line)")
        #expect(!r.err.contains("warning: OpenBLAS kernels"), "\(r.err)")
        removeRun(config: run.config)
    }

    /// A kernel set the user names in OPENBLAS_CORETYPE is kept, even a lesser one, with a
    /// warning that names it and what the CPU could run.
    @Test func userCoretypeIsRespected() throws {
        let cpu = MachineKernels.cpu
        let best = try #require(MachineKernels.blasKernels(for: cpu.level), "this CPU has no AVX: \(cpu.description)")
        let run = try smallRun("kernels-user", method: "lora")
        let r = try runDTrain(ranks: 1, ["train", "--config", run.config, "--set", "train.max_steps=1"],
                              env: ["OPENBLAS_CORETYPE": "Prescott", "DTRAIN_TEST_BLAS_FALLBACK": "Haswell"], timeout: 300)
        #expect(r.status == 0, "\(r.err)")
        let line = runLine(r.out)
        #expect(line.contains("OpenBLAS kernels Prescott, SSE (128-bit) (OPENBLAS_CORETYPE=Prescott)"), "\(line)")
        #expect(r.err.contains("warning: OpenBLAS kernels Prescott (SSE (128-bit)) are below this CPU's \(cpu.level): "
                               + "OPENBLAS_CORETYPE=Prescott is set"), "\(r.err)")
        #expect(r.err.contains("unset it to let dtrain run \(best)"), "\(r.err)")
        // The user's choice at the CPU's own level: kept, and no warning.
        let same = try runDTrain(ranks: 1, ["train", "--config", run.config, "--set", "train.max_steps=1",
                                            "--set", "output_dir=\(run.out)-2"],
                                 env: ["OPENBLAS_CORETYPE": best], timeout: 300)
        #expect(same.status == 0, "\(same.err)")
        #expect(runLine(same.out).contains("OpenBLAS kernels \(best), \(cpu.level) (OPENBLAS_CORETYPE=\(best))"), "\(same.out)")
        #expect(!same.err.contains("warning: OpenBLAS kernels"), "\(same.err)")
        removeRun(config: run.config)
    }
}

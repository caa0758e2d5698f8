import DTrainCore
import DTrainTestSupport
import Foundation
import Testing
@testable import DTrainTrainer

/// The bench's own arithmetic and bookkeeping (its timings are benchmarks, never tests).
struct BenchTests {
    /// Each timed step is set against the faster of the probes on either side of it.
    @Test func pairedMFUUsesTheFasterNeighbouringProbe() {
        // 100 GFLOP per step; one warm-up step, then two timed steps of 1 s and 2 s.
        let probes = [200.0, 100.0, 50.0]  // after warm-up, after timed 1, after timed 2
        let mfu = BenchCommand.pairedMFU(modelFlops: 100e9, timedSeconds: [1, 2], probeGFLOPs: probes, warmup: 1)
        // Step 1: 100 GFLOP/s against max(200, 100) = 0.5; step 2: 50 against max(100, 50) = 0.5.
        #expect(abs(mfu - 0.5) < 1e-12, "paired MFU \(mfu)")
        // Without warm-up the first step has only the probe after it.
        let first = BenchCommand.pairedMFU(modelFlops: 100e9, timedSeconds: [1], probeGFLOPs: [125], warmup: 0)
        #expect(abs(first - 0.8) < 1e-12, "paired MFU \(first)")
    }

    /// The probe's matrices leave nothing resident, and the peak-RSS mark can be reset after them,
    /// so the training steps' peak RSS does not include the benchmark's own memory.
    @Test func probeMemoryLeavesThePeakRSSMark() throws {
        // Start from a fresh mark: earlier tests in this process may have peaked higher.
        #expect(resetPeakRSS(), "writing /proc/self/clear_refs")
        let before = try #require(peakRSSBytes())
        var withMapping = 0
        do {
            let big = BenchCommand.MappedFloats(count: 32 << 20)  // 128 MiB
            for i in stride(from: 0, to: big.count, by: 1024) { big.base[i] = 1 }
            withMapping = try #require(peakRSSBytes())
            #expect(withMapping >= before + (100 << 20), "peak RSS \(withMapping) bytes with the mapping, \(before) before")
        }
        #expect(resetPeakRSS(), "writing /proc/self/clear_refs")
        let after = try #require(peakRSSBytes())
        // The unmapped 128 MiB no longer count (other tests in this process may allocate a little meanwhile).
        #expect(after < withMapping - (64 << 20), "peak RSS \(after) bytes after the reset, \(withMapping) with the mapping")
    }

    /// `bench step` sets the step against the machine's peak, the best sgemm of every kernel set
    /// the CPU supports, never the running set's own: with OpenBLAS pinned to its SSE3 kernels by
    /// the user, the peak still comes from the CPU's widest set, and both sets are named.
    @Test func benchMFUIsAgainstTheMachinesPeak() throws {
        let cpu = MachineKernels.cpu
        let best = try #require(MachineKernels.blasKernels(for: cpu.level), "this CPU has no AVX: \(cpu.description)")
        let r = try runDTrain(ranks: 1, ["bench", "step", "--model", try Fixtures.smolLM2Path(), "--method", "lora",
                                         "--batch", "1", "--seq-len", "32", "--steps", "1", "--warmup", "0",
                                         "--threads", "1", "--json"],
                              env: ["OPENBLAS_CORETYPE": "Prescott"], timeout: 300)
        #expect(r.status == 0, "\(r.err)")
        let line = try #require(r.out.split(separator: "\n").last { $0.hasPrefix("{") })
        let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(json["blas_kernels"] as? String == "Prescott", "\(line)")
        let byKernels = try #require(json["sgemm_peak_by_kernels"] as? [String: Double], "\(line)")
        for kernels in MachineKernels.supportedBLASKernelSets + ["Prescott"] {
            #expect((byKernels[kernels] ?? 0) > 0, "no sgemm figure for \(kernels): \(line)")
        }
        let peak = try #require(json["sgemm_peak_gflops"] as? Double)
        #expect(peak == byKernels.values.max(), "\(line)")
        #expect(json["sgemm_peak_kernels"] as? String != "Prescott", "\(line)")
        #expect(byKernels[best]! > byKernels["Prescott"]!, "\(line)")
        let mfu = try #require(json["mfu"] as? Double), achieved = try #require(json["achieved_gflops"] as? Double)
        #expect(abs(mfu - achieved / peak) < 1e-9, "\(line)")
        #expect((json["machine"] as? String)?.contains("OPENBLAS_CORETYPE=Prescott") == true, "\(line)")
        #expect(r.err.contains("warning: OpenBLAS kernels Prescott"), "\(r.err)")
    }
}

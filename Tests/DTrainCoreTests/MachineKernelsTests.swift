@testable import DTrainCore
import Testing

/// CPU detection and the OpenBLAS kernel sets' levels.
@Suite struct MachineKernelsTests {
    @Test func kernelSetLevels() {
        #expect(MachineKernels.level(ofBLASKernels: "Prescott") == .sse)
        #expect(MachineKernels.level(ofBLASKernels: "NEHALEM") == .sse)
        #expect(MachineKernels.level(ofBLASKernels: "Sandybridge") == .avx)
        #expect(MachineKernels.level(ofBLASKernels: "Haswell") == .avx2)
        #expect(MachineKernels.level(ofBLASKernels: "zen") == .avx2)
        #expect(MachineKernels.level(ofBLASKernels: "SkylakeX") == .avx512)
        #expect(MachineKernels.level(ofBLASKernels: "Cooperlake") == .avx512)
        #expect(MachineKernels.level(ofBLASKernels: "unknown") == .scalar)
        #expect(VectorLevel.avx512.bits == 512 && VectorLevel.avx2.bits == 256)
    }

    /// The CPU is read (every x86-64 CPU has SSE3), and unless the environment names a kernel set
    /// this test process runs the CPU's widest one: the constructor switched it before any test.
    @Test func thisProcessRunsTheWidestKernels() {
        let cpu = MachineKernels.cpu
        #expect(cpu.level >= .sse, "\(cpu.description)")
        #expect(!cpu.vendor.isEmpty)
        let running = MachineKernels.level(ofBLASKernels: MachineKernels.blasKernels)
        if MachineKernels.blasSelection.userCoretype == nil, cpu.level >= .avx {
            #expect(running == cpu.level, "\(MachineKernels.summary)")
            #expect(MachineKernels.warning == nil)
        } else if running < cpu.level {
            #expect(MachineKernels.warning != nil)
        }
        #expect(MachineKernels.supportedBLASKernelSets.allSatisfy { MachineKernels.level(ofBLASKernels: $0) <= cpu.level })
    }
}

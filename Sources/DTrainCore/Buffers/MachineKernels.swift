import CCPU

/// A vector level: what a CPU can run, and what a kernel set was written for.
public enum VectorLevel: Int, Comparable, Sendable, CustomStringConvertible {
    case scalar = 0, sse, avx, avx2, avx512

    public static func < (a: VectorLevel, b: VectorLevel) -> Bool { a.rawValue < b.rawValue }

    /// Register width in bits.
    public var bits: Int { [64, 128, 256, 256, 512][rawValue] }

    public var description: String {
        ["no SIMD", "SSE", "AVX", "AVX2/FMA", "AVX-512"][rawValue] + " (\(bits)-bit)"
    }

    init(c: Int32) { self = VectorLevel(rawValue: Int(c)) ?? .scalar }
}

/// This CPU's vector units and the OpenBLAS kernels that run the products.
///
/// OpenBLAS picks its kernels when it loads, from its table of CPU models, and falls back to far
/// slower ones for a model it does not know (Debian 12's 0.3.21 runs its SSE3 "Prescott" kernels
/// on Intel Emerald Rapids). The CCPU shim's constructor, which runs in every process that links
/// dtrain's core right after OpenBLAS's own, reads the CPU's features with CPUID and switches
/// OpenBLAS to the widest kernel set the CPU and the operating system support, unless the user
/// named one in `OPENBLAS_CORETYPE`. This type reports that decision.
public enum MachineKernels {
    /// The CPU as CPUID describes it.
    public struct CPU: Sendable {
        public var vendor: String, brand: String
        public var family: Int, model: Int
        public var level: VectorLevel
        public var avx512BF16: Bool, amx: Bool

        /// "AMD EPYC 9R14 (family 25 model 17), AVX-512 (512-bit)".
        public var description: String {
            let name = brand.isEmpty ? vendor : brand
            let extras = (avx512BF16 ? ", AVX512_BF16" : "") + (amx ? ", AMX" : "")
            return "\(name) (family \(family) model \(model)), \(level)\(extras)"
        }
    }

    public static let cpu: CPU = {
        let f = dtrain_cpu()!.pointee
        return CPU(vendor: string(f.vendor), brand: string(f.brand).trimmingSpaces,
                   family: Int(f.family), model: Int(f.model), level: VectorLevel(c: f.level),
                   avx512BF16: f.avx512bf16 != 0, amx: f.amx != 0)
    }()

    /// What happened to OpenBLAS's kernels at load.
    public struct BLASSelection: Sendable {
        /// OpenBLAS's own pick (or what the user or the test hook named).
        public var openblasChose: String
        /// `OPENBLAS_CORETYPE` as the process found it; nil when unset.
        public var userCoretype: String?
        /// The set dtrain switched to; nil when it kept OpenBLAS's.
        public var switchedTo: String?
        /// False when a switch was needed but this BLAS has no way to make it.
        public var switchWorked: Bool
        /// True when `DTRAIN_TEST_BLAS_FALLBACK` made OpenBLAS's pick (tests only).
        public var forcedByTestHook: Bool
    }

    public static let blasSelection: BLASSelection = {
        let s = dtrain_blas_selection_made()!.pointee
        let user = string(s.userCoretype), switched = string(s.switchedTo)
        return BLASSelection(openblasChose: string(s.openblasChose), userCoretype: user.isEmpty ? nil : user,
                             switchedTo: switched.isEmpty ? nil : switched, switchWorked: s.switchWorked != 0,
                             forcedByTestHook: s.forcedByTestHook != 0)
    }()

    /// The kernel set OpenBLAS runs now, e.g. "Haswell" (256-bit) or "SkylakeX" (AVX-512).
    public static var blasKernels: String { String(cString: dtrain_blas_running()) }

    /// The vector level an OpenBLAS kernel set is written for.
    public static func level(ofBLASKernels name: String) -> VectorLevel {
        VectorLevel(c: dtrain_blas_kernel_level(name))
    }

    /// The kernel set dtrain picks for a level on this CPU ("Cooperlake", "SkylakeX", "Haswell",
    /// "Sandybridge"); nil below AVX.
    public static func blasKernels(for level: VectorLevel) -> String? {
        let name = String(cString: dtrain_blas_kernels_for_level(Int32(level.rawValue), cpu.avx512BF16 ? 1 : 0))
        return name.isEmpty ? nil : name
    }

    /// Every OpenBLAS kernel set of at least 256-bit vectors this CPU can run, widest first: the
    /// candidates for the machine's sgemm peak.
    public static var supportedBLASKernelSets: [String] {
        var sets: [String] = []
        if cpu.level >= .avx512 { sets += cpu.avx512BF16 ? ["Cooperlake", "SkylakeX"] : ["SkylakeX"] }
        if cpu.level >= .avx2 { sets += ["Haswell"] }
        if cpu.level >= .avx { sets += ["Sandybridge"] }
        return sets
    }

    /// Switches OpenBLAS to `name` in this process (for measuring each kernel set's sgemm);
    /// true when it now runs them. No product may be running on any thread meanwhile.
    @discardableResult
    public static func switchBLAS(to name: String) -> Bool { dtrain_blas_switch(name) != 0 }

    /// Switches OpenBLAS back to `name` after `switchBLAS`: by name, else (a set OpenBLAS picks
    /// but cannot be told to, such as a newer one's SapphireRapids) by having it choose again
    /// from the environment. True when it runs `name` again.
    @discardableResult
    public static func restoreBLAS(to name: String) -> Bool {
        if switchBLAS(to: name) { return true }
        _ = dtrain_blas_reinit()
        return blasKernels.lowercased() == name.lowercased()
    }

    /// For the run's first line: the CPU, dtrain's vector width, and OpenBLAS's kernels with how
    /// they were chosen.
    public static var summary: String {
        let s = blasSelection, running = blasKernels
        var how: String
        if let user = s.userCoretype {
            how = "OPENBLAS_CORETYPE=\(user)"
        } else if s.switchedTo != nil, s.switchWorked {
            how = "switched by dtrain from OpenBLAS's \(s.openblasChose)\(s.forcedByTestHook ? " (test hook)" : "")"
        } else {
            how = "OpenBLAS's choice"
        }
        return "CPU \(cpu.description); dtrain's vector kernels \(Vectors.level); "
            + "OpenBLAS kernels \(running), \(level(ofBLASKernels: running)) (\(how))"
    }

    /// A warning when the products run on kernels below what the CPU supports; nil otherwise.
    public static var warning: String? {
        let running = blasKernels, have = level(ofBLASKernels: running)
        guard have < cpu.level else { return nil }
        let best = blasKernels(for: cpu.level) ?? "a wider kernel set"
        let s = blasSelection
        if let user = s.userCoretype {
            return "OpenBLAS kernels \(running) (\(have)) are below this CPU's \(cpu.level): OPENBLAS_CORETYPE=\(user) is set, "
                + "and dtrain keeps a choice the user made; unset it to let dtrain run \(best)"
        }
        return "OpenBLAS kernels \(running) (\(have)) are below this CPU's \(cpu.level), and this BLAS "
            + "cannot be switched to \(best) in the process; set OPENBLAS_CORETYPE=\(best) before starting dtrain"
    }

    private static func string<T>(_ tuple: T) -> String {
        withUnsafeBytes(of: tuple) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

private extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

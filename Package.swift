// swift-tools-version:6.0
// dtrain: data-parallel fine-tuning of Llama-family models on CPU clusters.
import PackageDescription

// Release builds drop overflow and bounds checks in the numeric code (the kernels index raw
// pointers whose extents are checked once, at buffer allocation) and generate AVX2/FMA code
// (x86-64-v3: every x86 server CPU since 2013); the vector kernels also get an AVX-512 build.
let fastMath: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo", "-target-cpu", "haswell"], .when(configuration: .release)),
]
// The AVX-512 build of the vector kernels (16 lanes), run only where CPUID reports AVX-512 F, CD,
// BW, DQ and VL and the OS saves the ZMM state. Debug builds get the target too: its code must
// compile for AVX-512 whatever the configuration.
let avx512Math: [SwiftSetting] = [
    .define("DTRAIN_LANES16"),
    .unsafeFlags(["-target-cpu", "skylake-avx512"]),
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

// Linux on x86-64 only: the system libraries come from Debian's packages, the CPU detection is
// x86's (CPUID), and the vector kernels are built for AVX2 and AVX-512. SwiftPM's `platforms`
// lists Apple platforms alone, so the manifest says it this way.
#if !os(Linux) || !arch(x86_64)
#error("dtrain builds on Linux (x86-64) only")
#endif

let package = Package(
    name: "dtrain",
    products: [
        .executable(name: "dtrain", targets: ["dtrain"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // MARK: C shims over Debian's system libraries (module map + shim.h each); zlib reads .jsonl.gz;
        // libcrypto gives hardware SHA-256 for checkpoint checksums.
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi",
                       providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        // CPUID and OpenBLAS's kernel choice, made in a constructor before any product runs.
        .target(name: "CCPU", path: "Sources/CCPU", linkerSettings: [.linkedLibrary("dl")]),

        // MARK: Vector kernels: one source compiled for AVX2 (8 lanes) and for AVX-512 (16 lanes;
        // Sources/DTrainVectors512 links to DTrainVectors' file); DTrainCore picks one at run time.
        .target(name: "DTrainVectors", dependencies: ["CCPU"], swiftSettings: fastMath),
        .target(name: "DTrainVectors512", dependencies: ["CCPU"], swiftSettings: avx512Math),

        // MARK: Core: flat buffers, kernels, the Llama model, LoRA, AdamW. No MPI, no HDF5.
        .target(name: "DTrainCore", dependencies: ["CBLAS", "CCPU", "DTrainVectors", "DTrainVectors512"],
                swiftSettings: fastMath),

        // MARK: Templates: the Jinja subset Hugging Face chat templates are written in. Text in,
        // text out: no dependency on the numerical core.
        .target(name: "DTrainTemplates", swiftSettings: fastMath),

        // MARK: Data: tokenizer, formats, batching (and the chat templates, re-exported).
        .target(name: "DTrainData", dependencies: ["DTrainCore", "DTrainTemplates", "CZlib"], swiftSettings: fastMath),

        // MARK: IO: GGUF, safetensors, HDF5 checkpoints, exports.
        .target(name: "DTrainIO", dependencies: ["DTrainCore", "DTrainData", "CHDF5", "CCrypto"],
                swiftSettings: fastMath),

        // MARK: Distributed: the Communicator protocol, MPI and single-process worlds.
        .target(name: "DTrainDistributed", dependencies: ["CMPI"], swiftSettings: fastMath),

        // MARK: Trainer: the run config, then a run set up, stepped, validated, checkpointed and
        // logged (Training/, Checkpointing/, Logging/); loss evaluation and the benchmarks.
        .target(name: "DTrainTrainer",
                dependencies: ["DTrainCore", "DTrainData", "DTrainIO", "DTrainDistributed", "CBLAS",
                               .product(name: "Yams", package: "Yams")],
                swiftSettings: fastMath),

        // MARK: CLI: every command as a type holding its options (train, inspect, data *, eval,
        // tokenize, bench); the commands call the library targets.
        .target(name: "DTrainCLI",
                dependencies: ["DTrainTrainer", .product(name: "ArgumentParser", package: "swift-argument-parser")],
                swiftSettings: fastMath),

        // MARK: The executable: runs the CLI's root command.
        .executableTarget(name: "dtrain", dependencies: ["DTrainCLI"], swiftSettings: fastMath),

        // MARK: Tests, one target per module, sharing comparison helpers and fixture paths.
        .target(name: "DTrainTestSupport", path: "Sources/DTrainTestSupport"),
        .testTarget(name: "DTrainCoreTests", dependencies: ["DTrainCore", "DTrainTestSupport"],
                    swiftSettings: fastMath),
        .testTarget(name: "DTrainDataTests", dependencies: ["DTrainData", "DTrainTestSupport"],
                    swiftSettings: fastMath),
        .testTarget(name: "DTrainIOTests", dependencies: ["DTrainIO", "DTrainCore", "DTrainData", "DTrainTestSupport"],
                    swiftSettings: fastMath),
        // The trainer tests launch the dtrain executable under mpirun, so they depend on it.
        .testTarget(name: "DTrainTrainerTests",
                    dependencies: ["DTrainTrainer", "DTrainCore", "DTrainData", "DTrainIO", "DTrainTestSupport", "dtrain"],
                    swiftSettings: fastMath),
    ],
    swiftLanguageModes: [.v5]
)

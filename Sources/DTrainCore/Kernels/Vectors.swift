import DTrainVectors
import Foundation
import DTrainVectors512

/// The element-wise kernels' vector code at one width (`DTrainVectors`: AVX2, 8 lanes;
/// `DTrainVectors512`: AVX-512, 16 lanes). Both modules compile the same source; each function
/// is documented there.
public protocol VectorKernelSet {
    static var lanes: Int { get }
    static func max(_ src: UnsafePointer<Float>, _ count: Int) -> Float
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float
    static func dot3(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>, _ count: Int) -> Float
    static func rowsTimesRows(_ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ a: UnsafePointer<Float>, _ lda: Int,
                              _ b: UnsafePointer<Float>, _ ldb: Int, _ M: Int, _ n0: Int, _ n1: Int, _ K: Int,
                              alpha: Float, accumulate: Bool)
    static func sumOfSquares(_ src: UnsafePointer<Float>, _ count: Int) -> Double
    static func expShifted(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int, shift: Float) -> Float
    static func scaleRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ r: Float,
                         _ w: UnsafePointer<Float>, _ count: Int)
    static func normGradientRow(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                                _ w: UnsafePointer<Float>, r: Float, k: Float, _ count: Int)
    static func addScaledProduct(_ acc: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                 _ s: Float, _ count: Int)
    static func scale(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ f: Float, _ count: Int)
    static func add(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int)
    static func addDifference(_ dst: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>,
                              _ b: Float, _ y: UnsafePointer<Float>, _ count: Int)
    static func scaledGradientRow(_ p: UnsafeMutablePointer<Float>, _ dp: UnsafeMutablePointer<Float>,
                                  _ e: UnsafePointer<Float>, _ count: Int, rowScale: Float, rowDot: Float)
    static func softmaxGradientRow(_ p: UnsafeMutablePointer<Float>, _ dp: UnsafeMutablePointer<Float>,
                                   _ count: Int, lse: Float, rowDot: Float)
    static func swiGLU(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                       _ lo: Int, _ hi: Int)
    static func swiGLUBackward(_ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>,
                               _ h: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                               _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ lo: Int, _ hi: Int)
    static func adamW(_ params: UnsafeMutablePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                      _ v: UnsafeMutablePointer<Float>, _ grads: UnsafePointer<Float>, _ lo: Int, _ hi: Int,
                      beta1: Float, beta2: Float, gradScale: Float, decay: Float, stepSize: Float,
                      bc2Sqrt: Float, eps: Float)
    static func dropoutMaskRow(_ bits: UnsafeMutablePointer<UInt32>, _ count: Int, key k: UInt64, threshold: UInt32)
    static func dropoutRow(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ count: Int,
                           bits: UnsafePointer<UInt32>, scale: Float)
    static func dropoutGradientRow(_ dx: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ count: Int,
                                   bits: UnsafePointer<UInt32>, scale: Float)
    static func loRADroppedA(_ xa: UnsafeMutablePointer<Float>, _ ldxa: Int, _ x: UnsafePointer<Float>,
                             _ bits: UnsafePointer<UInt32>, _ W: Int, _ a: UnsafePointer<Float>, _ IC: Int,
                             _ rows: Range<Int>, scale: Float)
    static func loRADroppedInput(_ dx: UnsafeMutablePointer<Float>, _ dxa: UnsafePointer<Float>, _ lddxa: Int,
                                 _ bits: UnsafePointer<UInt32>, _ W: Int, _ a: UnsafePointer<Float>, _ IC: Int,
                                 _ rows: Range<Int>, scale: Float)
    static func loRADroppedGradA(_ da: UnsafeMutablePointer<Float>, _ dxa: UnsafePointer<Float>, _ lddxa: Int,
                                 _ x: UnsafePointer<Float>, _ bits: UnsafePointer<UInt32>, _ W: Int,
                                 _ N: Int, _ IC: Int, _ c0: Int, _ c1: Int, scale: Float)
    static func loRAColumns(_ db: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ ldout: Int,
                            _ dout: UnsafePointer<Float>, _ xa: UnsafePointer<Float>, _ ldxa: Int,
                            _ b: UnsafePointer<Float>, _ N: Int, _ OC: Int, _ r: Int, _ f0: Int, _ f1: Int,
                            _ scale: Float)
}

extension DTrainVectors.VectorKernels: VectorKernelSet {}
extension DTrainVectors512.VectorKernels: VectorKernelSet {}

/// The vector kernels this process runs: AVX-512 where the CPU (and the OS) support it,
/// AVX2/FMA otherwise; `DTRAIN_VECTOR_BITS=256` asks for the AVX2 ones on any CPU.
public enum Vectors {
    /// AVX2/FMA, 8 float32 lanes.
    public static let avx2: any VectorKernelSet.Type = DTrainVectors.VectorKernels.self
    /// AVX-512, 16 float32 lanes: only on a CPU whose `MachineKernels.cpu.level` is `.avx512`.
    public static let avx512: any VectorKernelSet.Type = DTrainVectors512.VectorKernels.self

    /// The set every kernel calls, chosen once.
    public static let kernels: any VectorKernelSet.Type = {
        let asked = getenv("DTRAIN_VECTOR_BITS").map { String(cString: $0) }
        return MachineKernels.cpu.level >= .avx512 && asked != "256" ? avx512 : avx2
    }()

    /// The vector level the kernels run at, for the run line.
    public static var level: VectorLevel { kernels.lanes == 16 ? .avx512 : .avx2 }
}

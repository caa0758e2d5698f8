import Foundation

/// An all-reduce in flight; `Communicator.test` drives it, `wait` completes it.
public final class ReduceHandle {
    /// Opaque request storage owned by the communicator that started it.
    public var request: UnsafeMutableRawPointer?
    public var done = false
    public init(request: UnsafeMutableRawPointer?, done: Bool) { self.request = request; self.done = done }
}

/// The collective operations data-parallel training needs, over one world of ranks.
///
/// Every rank must make the same sequence of collective calls; a rank that fails calls
/// `abort`, which ends every rank (under mpirun) rather than leaving the others waiting.
public protocol Communicator: AnyObject {
    /// This process's rank, 0..<worldSize.
    var rank: Int { get }
    /// Number of ranks.
    var worldSize: Int { get }
    /// Sums `count` floats at `buffer` over all ranks, in place.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    /// Sums doubles over all ranks, in place (losses, token counts, norms: reduced in float64).
    func allReduceSum(_ values: inout [Double])
    /// Largest value over all ranks, in place.
    func allReduceMax(_ values: inout [Double])
    /// Copies `count` floats from `root` to every rank.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int)
    /// Copies doubles from `root` to every rank.
    func broadcast(_ values: inout [Double], root: Int)
    /// Copies a string from `root` to every rank (the other ranks' `text` is replaced).
    func broadcast(_ text: inout String, root: Int)
    /// Sums integers (counts, flags) over all ranks, in place, exactly.
    func allReduceSum(_ values: inout [Int])
    /// Largest integer over all ranks, in place.
    func allReduceMax(_ values: inout [Int])
    /// Copies integers from `root` to every rank.
    func broadcast(_ values: inout [Int], root: Int)
    /// Every rank's `count` floats of `send`, in rank order, into `recv` (worldSize · count).
    func allGather(send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>)
    /// Every rank's `count` integers of `send`, in rank order, into `recv` (worldSize · count).
    func allGather(send: UnsafePointer<Int32>, count: Int, into recv: UnsafeMutablePointer<Int32>)
    /// Starts summing `count` floats of `send` into `recv` on every rank without blocking.
    /// The buffers must stay untouched until `wait` returns.
    func startAllReduceSum(send: UnsafePointer<Float>, recv: UnsafeMutablePointer<Float>, count: Int) -> ReduceHandle
    /// Lets a started reduction progress; returns whether it has completed.
    @discardableResult func test(_ handle: ReduceHandle) -> Bool
    /// Blocks until a started reduction has completed.
    func wait(_ handle: ReduceHandle)
    /// Blocks until every rank has arrived.
    func barrier()
    /// Whether a second thread may test started reductions (one MPI call at a time, the caller
    /// serialising them).
    var allowsProgressThread: Bool { get }
    /// Ends every rank of the job with `code` after printing `message` prefixed by this rank.
    func abort(code: Int32, message: String) -> Never
}

extension Communicator {
    /// Copies 64-bit words (hashes) from `root` to every rank, bit for bit.
    public func broadcast(_ values: inout [UInt64], root: Int) {
        var words = values.map { Int(bitPattern: UInt($0)) }
        broadcast(&words, root: root)
        values = words.map { UInt64(UInt(bitPattern: $0)) }
    }

    /// Copies one `Codable` value (a state record) from `root` to every rank, as JSON; doubles
    /// survive bit for bit (shortest round-trip text, NaN and infinities spelled out).
    public func broadcast<T: Codable>(_ value: inout T, root: Int) throws {
        var text = ""
        if rank == root {
            let encoder = JSONEncoder()
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            text = String(decoding: try encoder.encode(value), as: UTF8.self)
        }
        broadcast(&text, root: root)
        if rank != root {
            let decoder = JSONDecoder()
            decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            value = try decoder.decode(T.self, from: Data(text.utf8))
        }
    }
}

extension Communicator {
    /// Every rank's `value`, in rank order, on every rank (one broadcast per rank: for results
    /// gathered once, such as eval's answers, not for anything inside a training step).
    public func allGather<T: Codable>(_ value: T) throws -> [T] {
        try (0..<worldSize).map { root in
            var copy = value
            try broadcast(&copy, root: root)
            return copy
        }
    }
}

/// A world of one: every collective is the identity.
public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var worldSize: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    public func allReduceSum(_ values: inout [Double]) {}
    public func allReduceMax(_ values: inout [Double]) {}
    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) {}
    public func broadcast(_ values: inout [Double], root: Int) {}
    public func broadcast(_ text: inout String, root: Int) {}
    public func allReduceSum(_ values: inout [Int]) {}
    public func allReduceMax(_ values: inout [Int]) {}
    public func broadcast(_ values: inout [Int], root: Int) {}
    public func allGather(send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>) {
        recv.update(from: send, count: count)
    }
    public func allGather(send: UnsafePointer<Int32>, count: Int, into recv: UnsafeMutablePointer<Int32>) {
        recv.update(from: send, count: count)
    }
    public func startAllReduceSum(send: UnsafePointer<Float>, recv: UnsafeMutablePointer<Float>, count: Int) -> ReduceHandle {
        if UnsafePointer(recv) != send { recv.update(from: send, count: count) }
        return ReduceHandle(request: nil, done: true)
    }
    public func test(_ handle: ReduceHandle) -> Bool { true }
    public func wait(_ handle: ReduceHandle) {}
    public func barrier() {}
    public var allowsProgressThread: Bool { false }
    public func abort(code: Int32, message: String) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        exit(code)
    }
}

/// The world this process belongs to: MPI when launched by mpirun/srun, otherwise a world of one.
public enum World {
    /// Whether the environment says this process was started by an MPI launcher.
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_RANK"] != nil
            || env["SLURM_PROCID"] != nil && env["SLURM_NTASKS"].map { Int($0) ?? 1 > 1 } == true
    }

    /// Creates the communicator for this process (initialising MPI when launched by a launcher).
    public static func make() -> Communicator {
        launchedByMPI ? MPICommunicator() : SingleProcessCommunicator()
    }
}

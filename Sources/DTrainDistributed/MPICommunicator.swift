import CMPI
import Foundation

/// `Communicator` over MPI_COMM_WORLD.
///
/// Non-blocking reductions are out of place (separate send and receive buffers): Open MPI 4.1's
/// MPI_Iallreduce with MPI_IN_PLACE falls back to a binomial tree. Open MPI progresses them only
/// inside MPI calls, so the gradient reducer tests them from a thread of its own while backward
/// runs (MPI_THREAD_SERIALIZED: the reducer's lock keeps the two threads' MPI calls apart).
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let worldSize: Int
    private let comm = dtrain_mpi_comm_world()

    /// Whether MPI granted MPI_THREAD_SERIALIZED (any thread may call MPI, one at a time).
    public let allowsProgressThread: Bool

    /// Initialises MPI (serialized: any thread may call MPI, never two at once).
    public init() {
        var provided: Int32 = 0
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            MPI_Init_thread(nil, nil, dtrain_mpi_thread_serialized(), &provided)
        } else {
            MPI_Query_thread(&provided)
        }
        allowsProgressThread = provided >= dtrain_mpi_thread_serialized()
        var r: Int32 = 0, n: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &n)
        rank = Int(r)
        worldSize = Int(n)
        // Errors abort the whole job (the default handler), so no rank waits on a dead peer.
        atexit { var fin: Int32 = 0; MPI_Finalized(&fin); if fin == 0 { MPI_Finalize() } }
    }

    private func check(_ code: Int32, _ what: String) {
        if code != dtrain_mpi_success() { abort(code: 3, message: "\(what) failed with MPI error \(code)") }
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        var offset = 0
        while offset < count { // MPI counts are Int32
            let n = min(count - offset, Int(Int32.max))
            check(MPI_Allreduce(dtrain_mpi_in_place(), buffer + offset, Int32(n), dtrain_mpi_float(), dtrain_mpi_sum(), comm),
                  "MPI_Allreduce")
            offset += n
        }
    }

    /// An in-place all-reduce of a small array (counts, flags, losses) of MPI type `type`.
    private func allReduce<T>(_ values: inout [T], _ type: MPI_Datatype?, _ op: MPI_Op?) {
        let n = Int32(values.count)
        values.withUnsafeMutableBufferPointer { buf in
            check(MPI_Allreduce(dtrain_mpi_in_place(), buf.baseAddress, n, type, op, comm), "MPI_Allreduce")
        }
    }

    /// A broadcast of a small array of MPI type `type` from `root`.
    private func broadcast<T>(_ values: inout [T], _ type: MPI_Datatype?, root: Int) {
        let n = Int32(values.count)
        values.withUnsafeMutableBufferPointer { buf in
            check(MPI_Bcast(buf.baseAddress, n, type, Int32(root), comm), "MPI_Bcast")
        }
    }

    public func allReduceSum(_ values: inout [Double]) { allReduce(&values, dtrain_mpi_double(), dtrain_mpi_sum()) }
    public func allReduceMax(_ values: inout [Double]) { allReduce(&values, dtrain_mpi_double(), dtrain_mpi_max()) }
    public func broadcast(_ values: inout [Double], root: Int) { broadcast(&values, dtrain_mpi_double(), root: root) }
    public func allReduceSum(_ values: inout [Int]) { allReduce(&values, dtrain_mpi_int64(), dtrain_mpi_sum()) }
    public func allReduceMax(_ values: inout [Int]) { allReduce(&values, dtrain_mpi_int64(), dtrain_mpi_max()) }
    public func broadcast(_ values: inout [Int], root: Int) { broadcast(&values, dtrain_mpi_int64(), root: root) }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) {
        var offset = 0
        while offset < count {
            let n = min(count - offset, Int(Int32.max))
            check(MPI_Bcast(buffer + offset, Int32(n), dtrain_mpi_float(), Int32(root), comm), "MPI_Bcast")
            offset += n
        }
    }

    public func broadcast(_ text: inout String, root: Int) {
        var bytes = Array(text.utf8)
        var count = [Double(bytes.count)]
        broadcast(&count, root: root)
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(count[0])) }
        bytes.withUnsafeMutableBytes { buf in
            check(MPI_Bcast(buf.baseAddress, Int32(buf.count), dtrain_mpi_byte(), Int32(root), comm), "MPI_Bcast")
        }
        if rank != root { text = String(decoding: bytes, as: UTF8.self) }
    }

    public func allGather(send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>) {
        precondition(count <= Int(Int32.max), "allGather: too many floats")
        check(MPI_Allgather(send, Int32(count), dtrain_mpi_float(), recv, Int32(count), dtrain_mpi_float(), comm), "MPI_Allgather")
    }

    public func allGather(send: UnsafePointer<Int32>, count: Int, into recv: UnsafeMutablePointer<Int32>) {
        precondition(count <= Int(Int32.max), "allGather: too many integers")
        check(MPI_Allgather(send, Int32(count), dtrain_mpi_int(), recv, Int32(count), dtrain_mpi_int(), comm), "MPI_Allgather")
    }

    public func startAllReduceSum(send: UnsafePointer<Float>, recv: UnsafeMutablePointer<Float>, count: Int) -> ReduceHandle {
        precondition(count <= Int(Int32.max), "startAllReduceSum: bucket too large")
        let request = UnsafeMutablePointer<MPI_Request?>.allocate(capacity: 1)
        check(MPI_Iallreduce(send, recv, Int32(count), dtrain_mpi_float(), dtrain_mpi_sum(), comm, request), "MPI_Iallreduce")
        return ReduceHandle(request: UnsafeMutableRawPointer(request), done: false)
    }

    @discardableResult
    public func test(_ handle: ReduceHandle) -> Bool {
        guard !handle.done, let raw = handle.request else { return true }
        let request = raw.assumingMemoryBound(to: MPI_Request?.self)
        var flag: Int32 = 0
        check(MPI_Test(request, &flag, dtrain_mpi_status_ignore()), "MPI_Test")
        if flag != 0 { finish(handle) }
        return handle.done
    }

    public func wait(_ handle: ReduceHandle) {
        guard !handle.done, let raw = handle.request else { return }
        let request = raw.assumingMemoryBound(to: MPI_Request?.self)
        check(MPI_Wait(request, dtrain_mpi_status_ignore()), "MPI_Wait")
        finish(handle)
    }

    private func finish(_ handle: ReduceHandle) {
        handle.done = true
        handle.request?.assumingMemoryBound(to: MPI_Request?.self).deallocate()
        handle.request = nil
    }

    public func barrier() { check(MPI_Barrier(comm), "MPI_Barrier") }

    public func abort(code: Int32, message: String) -> Never {
        FileHandle.standardError.write(Data("rank \(rank): error: \(message)\n".utf8))
        MPI_Abort(comm, code)
        exit(code)
    }
}

/// The collective operations data-parallel training needs, over one world of ranks.
public protocol Communicator: AnyObject {
    /// This process's rank, 0..<worldSize.
    var rank: Int { get }
    /// Number of ranks.
    var worldSize: Int { get }
    /// Sums `count` floats at `buffer` over all ranks, in place.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    /// Blocks until every rank has arrived.
    func barrier()
}

/// A world of one: every collective is the identity.
public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var worldSize: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    public func barrier() {}
}

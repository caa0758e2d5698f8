import CHDF5
import Foundation

/// A failure reading or writing an HDF5 file, naming the file and the object involved.
public struct HDF5Error: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }
}

/// The few HDF5 operations the checkpoint format needs: groups, float32 datasets of any shape,
/// scalar string datasets, and string / int64 / float64 attributes, addressed by absolute path
/// (`/weights/model.norm.weight`). Every handle opened is closed before the call returns, so a
/// failed call leaks nothing; `close()` reports a failure to flush the file.
final class HDF5File {
    let path: String
    private var id: hid_t

    private init(path: String, id: hid_t) {
        self.path = path
        self.id = id
    }

    deinit { if id >= 0 { H5Fclose(id) } }

    /// Switches off HDF5's shutdown at process exit, before the first HDF5 call (as
    /// `H5dont_atexit` requires). Debian 12's thread-safe HDF5 1.10.8 sometimes fails to shut
    /// its error interface down there and prints "HDF5: infinite loop closing library" (seen
    /// at the end of the multi-threaded test runs). Nothing needs that shutdown: every file
    /// dtrain opens is closed by `close()` or by `deinit` (readers, and writers on an error path),
    /// and a checkpoint counts only once its closed temporary file has been renamed into place.
    private static let processSetUp: Void = {
        let status = H5dont_atexit()
        assert(status >= 0, "H5dont_atexit must come before any other HDF5 call")
    }()

    /// Prepares the calling thread: the process set-up above, and HDF5's own error printing
    /// silenced (per thread in a thread-safe build), since dtrain reports errors itself, naming the file.
    private static func prepareThread() {
        processSetUp
        dtrain_h5_silence_errors()
    }

    /// Creates (or truncates) a file for writing. Objects of `alignment` bytes or more start at
    /// multiples of it, so their raw data can be written with O_DIRECT (`reserveFloats`).
    static func create(path: String, alignment: Int = 1) throws -> HDF5File {
        prepareThread()
        let fapl = H5Pcreate(dtrain_h5p_file_access())
        defer { H5Pclose(fapl) }
        if alignment > 1 { H5Pset_alignment(fapl, hsize_t(alignment), hsize_t(alignment)) }
        let id = H5Fcreate(path, dtrain_h5f_acc_trunc(), dtrain_h5p_default(), fapl)
        guard id >= 0 else { throw HDF5Error(path: path, message: "cannot create an HDF5 file here (permissions, or no such directory?)") }
        return HDF5File(path: path, id: id)
    }

    /// Opens an existing file read-only.
    static func open(path: String) throws -> HDF5File {
        prepareThread()
        guard FileManager.default.fileExists(atPath: path) else { throw HDF5Error(path: path, message: "no such file") }
        guard H5Fis_hdf5(path) > 0 else {
            throw HDF5Error(path: path, message: "not an HDF5 file (no HDF5 signature; truncated or overwritten?)")
        }
        let id = H5Fopen(path, dtrain_h5f_acc_rdonly(), dtrain_h5p_default())
        guard id >= 0 else { throw HDF5Error(path: path, message: "HDF5 cannot open it (truncated or corrupted)") }
        return HDF5File(path: path, id: id)
    }

    /// Flushes and closes the file; the object is unusable afterwards.
    func close() throws {
        guard id >= 0 else { return }
        let status = H5Fclose(id)
        id = -1
        guard status >= 0 else { throw HDF5Error(path: path, message: "closing (flushing) the file failed; disk full?") }
    }

    private func fail(_ message: String) -> HDF5Error { HDF5Error(path: path, message: message) }

    // MARK: Structure

    func createGroup(_ name: String) throws {
        let g = H5Gcreate2(id, name, dtrain_h5p_default(), dtrain_h5p_default(), dtrain_h5p_default())
        guard g >= 0 else { throw fail("cannot create group \(name)") }
        H5Gclose(g)
    }

    /// Whether every component of an absolute path exists.
    func exists(_ name: String) -> Bool {
        var prefix = ""
        for part in name.split(separator: "/") {
            prefix += "/" + part
            if H5Lexists(id, prefix, dtrain_h5p_default()) <= 0 { return false }
        }
        return true
    }

    // MARK: Float datasets

    /// Creates a contiguous float32 dataset whose space is allocated now and never filled, and
    /// returns the file offset of its raw data, for the caller to write after closing the file.
    func reserveFloats(_ name: String, shape: [Int]) throws -> Int {
        var dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), &dims, nil)
        guard space >= 0 else { throw fail("cannot describe the shape \(shape) of \(name)") }
        defer { H5Sclose(space) }
        let dcpl = H5Pcreate(dtrain_h5p_dataset_create())
        defer { H5Pclose(dcpl) }
        H5Pset_layout(dcpl, H5D_CONTIGUOUS)
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY)
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER)
        let d = H5Dcreate2(id, name, dtrain_h5t_ieee_f32le(), space, dtrain_h5p_default(), dcpl, dtrain_h5p_default())
        guard d >= 0 else { throw fail("cannot create dataset \(name)") }
        defer { H5Dclose(d) }
        let offset = H5Dget_offset(d)
        guard offset != dtrain_haddr_undef() else { throw fail("no file space allocated for dataset \(name)") }
        return Int(offset)
    }

    /// The shape of a dataset.
    func shape(_ name: String) throws -> [Int] {
        guard exists(name) else { throw fail("missing dataset \(name)") }
        let d = H5Dopen2(id, name, dtrain_h5p_default())
        guard d >= 0 else { throw fail("cannot open dataset \(name)") }
        defer { H5Dclose(d) }
        let space = H5Dget_space(d)
        defer { H5Sclose(space) }
        let rank = Int(H5Sget_simple_extent_ndims(space))
        guard rank >= 0 else { throw fail("cannot read the shape of \(name)") }
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        H5Sget_simple_extent_dims(space, &dims, nil)
        return dims.prefix(rank).map { Int($0) }
    }

    /// Reads a float dataset of exactly `count` elements into `out`.
    func readFloats(_ name: String, into out: UnsafeMutablePointer<Float>, count: Int) throws {
        let n = try shape(name).reduce(1, *)
        guard n == count else { throw fail("dataset \(name) holds \(n) values, expected \(count)") }
        let d = H5Dopen2(id, name, dtrain_h5p_default())
        guard d >= 0 else { throw fail("cannot open dataset \(name)") }
        defer { H5Dclose(d) }
        guard H5Dread(d, dtrain_h5t_native_float(), dtrain_h5s_all(), dtrain_h5s_all(), dtrain_h5p_default(), out) >= 0 else {
            throw fail("reading dataset \(name) failed (file truncated or corrupted)")
        }
    }

    // MARK: Strings and attributes

    /// A fixed-length UTF-8 string type of `bytes` bytes (at least one: HDF5 has no empty type).
    private func stringType(bytes: Int) -> hid_t {
        let t = H5Tcopy(dtrain_h5t_c_s1())
        H5Tset_size(t, max(1, bytes))
        H5Tset_cset(t, H5T_CSET_UTF8)
        return t
    }

    /// Writes a scalar string dataset (h5dump shows it as text).
    func writeString(_ name: String, _ value: String) throws {
        let bytes = Array(value.utf8)
        let type = stringType(bytes: bytes.count)
        defer { H5Tclose(type) }
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let d = H5Dcreate2(id, name, type, space, dtrain_h5p_default(), dtrain_h5p_default(), dtrain_h5p_default())
        guard d >= 0 else { throw fail("cannot create dataset \(name)") }
        defer { H5Dclose(d) }
        let padded = bytes.isEmpty ? [0] : bytes
        guard H5Dwrite(d, type, dtrain_h5s_all(), dtrain_h5s_all(), dtrain_h5p_default(), padded) >= 0 else {
            throw fail("writing dataset \(name) failed; disk full?")
        }
    }

    func readString(_ name: String) throws -> String {
        guard exists(name) else { throw fail("missing dataset \(name)") }
        let d = H5Dopen2(id, name, dtrain_h5p_default())
        guard d >= 0 else { throw fail("cannot open dataset \(name)") }
        defer { H5Dclose(d) }
        let type = H5Dget_type(d)
        defer { H5Tclose(type) }
        guard H5Tget_class(type) == H5T_STRING, H5Tis_variable_str(type) == 0 else { throw fail("\(name) is not a fixed-length string") }
        var buffer = [UInt8](repeating: 0, count: H5Tget_size(type) + 1)
        guard H5Dread(d, type, dtrain_h5s_all(), dtrain_h5s_all(), dtrain_h5p_default(), &buffer) >= 0 else {
            throw fail("reading dataset \(name) failed (file truncated or corrupted)")
        }
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An attribute value of one of the three kinds the checkpoint uses.
    enum Value: Equatable {
        case string(String), int(Int64), double(Double)
    }

    /// Sets attribute `name` on the object at `object` (a group or dataset path).
    func setAttribute(_ object: String, _ name: String, _ value: Value) throws {
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let type: hid_t
        switch value {
        case .string(let s): type = stringType(bytes: s.utf8.count)
        case .int: type = H5Tcopy(dtrain_h5t_std_i64le())
        case .double: type = H5Tcopy(dtrain_h5t_ieee_f64le())
        }
        defer { H5Tclose(type) }
        let a = H5Acreate_by_name(id, object, name, type, space, dtrain_h5p_default(), dtrain_h5p_default(), dtrain_h5p_default())
        guard a >= 0 else { throw fail("cannot create attribute \(name) on \(object)") }
        defer { H5Aclose(a) }
        let status: herr_t
        switch value {
        case .string(let s):
            let bytes = s.isEmpty ? [UInt8(0)] : Array(s.utf8)
            status = H5Awrite(a, type, bytes)
        case .int(var v): status = H5Awrite(a, dtrain_h5t_native_int64(), &v)
        case .double(var v): status = H5Awrite(a, dtrain_h5t_native_double(), &v)
        }
        guard status >= 0 else { throw fail("writing attribute \(name) on \(object) failed") }
    }

    /// Reads attribute `name` of the object at `object`.
    func attribute(_ object: String, _ name: String) throws -> Value {
        guard exists(object), H5Aexists_by_name(id, object, name, dtrain_h5p_default()) > 0 else {
            throw fail("missing attribute \(name) on \(object)")
        }
        let a = H5Aopen_by_name(id, object, name, dtrain_h5p_default(), dtrain_h5p_default())
        guard a >= 0 else { throw fail("cannot open attribute \(name) on \(object)") }
        defer { H5Aclose(a) }
        let type = H5Aget_type(a)
        defer { H5Tclose(type) }
        switch H5Tget_class(type) {
        case H5T_STRING where H5Tis_variable_str(type) == 0:
            var buffer = [UInt8](repeating: 0, count: H5Tget_size(type) + 1)
            guard H5Aread(a, type, &buffer) >= 0 else { throw fail("reading attribute \(name) on \(object) failed") }
            return .string(String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self))
        case H5T_INTEGER:
            var v: Int64 = 0
            guard H5Aread(a, dtrain_h5t_native_int64(), &v) >= 0 else { throw fail("reading attribute \(name) on \(object) failed") }
            return .int(v)
        case H5T_FLOAT:
            var v = 0.0
            guard H5Aread(a, dtrain_h5t_native_double(), &v) >= 0 else { throw fail("reading attribute \(name) on \(object) failed") }
            return .double(v)
        default:
            throw fail("attribute \(name) on \(object) has a type dtrain does not write")
        }
    }

    func string(_ object: String, _ name: String) throws -> String {
        guard case .string(let s) = try attribute(object, name) else { throw fail("attribute \(name) on \(object) is not a string") }
        return s
    }

    func int(_ object: String, _ name: String) throws -> Int {
        guard case .int(let v) = try attribute(object, name) else { throw fail("attribute \(name) on \(object) is not an integer") }
        return Int(v)
    }

    func double(_ object: String, _ name: String) throws -> Double {
        switch try attribute(object, name) {
        case .double(let v): return v
        case .int(let v): return Double(v)
        case .string: throw fail("attribute \(name) on \(object) is not a number")
        }
    }
}

import DTrainIO
import DTrainTestSupport
import Foundation
import Testing

/// The rehearsal cluster of launch/netns-cluster.sh: network namespaces as hosts, TCP between
/// them. Brought up by one test and always taken down by it.
struct NetnsCluster {
    static let script = Fixtures.packageRoot.appendingPathComponent("launch/netns-cluster.sh").path
    let hostfile: String

    static func up(_ hosts: Int, _ options: [String] = []) throws -> NetnsCluster {
        _ = try? shell("bash", [script, "down"])  // what a failed earlier run may have left
        let r = try shell("bash", [script, "up", "\(hosts)"] + options)
        guard r.status == 0, let last = r.out.split(separator: "\n").last, last.hasSuffix("hostfile") else {
            throw FixtureError(message: "netns-cluster.sh up \(hosts) failed (exit \(r.status)):\n\(r.out)")
        }
        print("netns cluster: \(r.out.split(separator: "\n").filter { $0.contains("hosts up") }.joined())")
        return NetnsCluster(hostfile: String(last))
    }

    func down() { _ = try? shell("bash", [NetnsCluster.script, "down"]) }

    /// A hostfile of the first `n` hosts (the agent line kept), for a run on fewer hosts.
    func hostfile(first n: Int) throws -> String {
        let lines = try String(contentsOfFile: hostfile, encoding: .utf8).split(separator: "\n")
        let path = TestScratch.file("hostfile-\(n)").path
        try (lines.prefix(1) + lines.dropFirst().prefix(n)).joined(separator: "\n").appending("\n")
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The pids of dtrain processes running on `host` (inside its network namespace).
    func dtrainPids(on host: String) throws -> [Int32] {
        try shell("ip", ["netns", "pids", host]).out.split(separator: "\n").compactMap { Int32($0) }.filter { pid in
            (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.hasPrefix("dtrain") == true
        }
    }
}

/// `bash launch/cluster.sh HOSTFILE PER_HOST CONFIG ARGS...` with the test's dtrain and model.
func runCluster(_ hostfile: String, perHost: Int, config: String, _ args: [String], mpiArgs: String = "", timeout: Double = 900,
                whileRunning: ((Int32) -> Void)? = nil) throws -> (status: Int32, out: String, err: String) {
    let hosts = try String(contentsOfFile: hostfile, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }.count
    return try MemoryGate.admit(ranks: hosts * perHost, args: ["--config", config] + args) {
        try runLauncher(["bash", Fixtures.packageRoot.appendingPathComponent("launch/cluster.sh").path, hostfile, "\(perHost)", config] + args,
                        env: ["DTRAIN_BIN": try dtrainBinary(), "DTRAIN_MODEL": try Fixtures.smolLM2Path(), "DTRAIN_MPI_ARGS": mpiArgs],
                        timeout: timeout, whileRunning: whileRunning)
    }
}

/// The trained tensors of a run's final/ (for full fine-tuning a sample, below).
func finalWeights(_ out: String, method: String) throws -> [String: [Float]] {
    let st = try SafetensorsFile(path: out + (method == "lora" ? "/final/adapter_model.safetensors" : "/final/model.safetensors"))
    var w: [String: [Float]] = [:]
    // Full fine-tuning: the last layer, the norms and the (tied) embedding, whose gradient
    // crosses ranks as a dense head part and gathered lookup rows.
    for name in st.tensors.keys where method == "lora" || name.contains("layers.29") || name.contains("norm") || name.contains("embed_tokens") {
        w[name] = try st.floats(name)
    }
    return w
}

/// Ranks on different namespace hosts: TCP between hosts (checked in Open MPI's own BTL
/// selection log), the same training as on one host, stop/resume and a killed rank across the
/// network, a lossy link.
@Suite(.serialized) struct MultiHostTests {
    /// 2 hosts x 1 rank and 2 hosts x 2 ranks reach the weights of 1 rank accumulating over the
    /// same global batch, within float32 reduction-order differences; between hosts the ranks
    /// talk TCP. How that is checked: with `--mca btl_base_verbose 30` each rank logs, per peer,
    /// "mca: bml: Using <btl> btl for send to [[job,1],<rank>] on node <host>" at its first send
    /// to that peer; every such line for a peer on another host must name tcp (shared memory, vader, is only for peers on the
    /// rank's own host, and with one rank per host its initialisation fails for lack of peers).
    @Test(arguments: ["lora", "full"])
    func hostsAgreeWithOneRank(method: String) throws {
        let cluster = try NetnsCluster.up(2, ["--rate", "10gbit", "--delay", "0.2ms"])
        defer { cluster.down() }
        let single = try smallRun("mh-agree-1-\(method)", method: method)
        let one = try runDTrain(ranks: 1, ["train", "--config", single.config, "--set", "batch.micro=2"])
        #expect(one.status == 0, "\(one.err)")
        let reference = try finalWeights(single.out, method: method)
        removeRun(config: single.config)

        for perHost in [1, 2] {
            let run = try smallRun("mh-agree-\(perHost)-\(method)", method: method)
            let r = try runCluster(cluster.hostfile, perHost: perHost, config: run.config, ["--set", "batch.micro=2", "--set", "threads=1"],
                                   mpiArgs: "--mca btl_base_verbose 30")
            #expect(r.status == 0, "2 hosts x \(perHost): exit \(r.status)\n\(r.err.suffix(3000))")
            let log = r.out + r.err
            #expect(log.contains("2 hosts x \(perHost) ranks = \(2 * perHost) ranks"), "\(r.err.prefix(500))")
            let selections = Self.btlSelections(log)
            let crossHost = selections.filter { $0.from != $0.to }
            // Open MPI logs a peer's transport at the first send to it, and the collectives need
            // not pair every rank with every other: both hosts must have reached the other.
            #expect(Set(crossHost.map(\.from)) == ["dtrain-h0", "dtrain-h1"], "\(selections)")
            #expect(crossHost.allSatisfy { $0.btl == "tcp" }, "a rank used shared memory to reach another host: \(crossHost)")
            if perHost == 2 {
                #expect(selections.contains { $0.from == $0.to && $0.btl == "vader" }, "ranks on one host should use shared memory: \(selections)")
            }
            let weights = try finalWeights(run.out, method: method)
            var worst = 0.0
            for (name, ref) in reference { worst = max(worst, compare(weights[name] ?? [], ref, label: name).maxAbs) }
            print("\(method): 1 rank x 4 accumulation vs 2 hosts x \(perHost) rank(s) over TCP: max abs weight difference \(worst)")
            #expect(worst < 1e-5, "\(method): 2 hosts x \(perHost) differ from 1 rank by \(worst)")
            removeRun(config: run.config)
        }
    }

    /// (host of the sender, btl, host of the peer) from Open MPI's BTL selection log.
    static func btlSelections(_ log: String) -> [(from: String, btl: String, to: String)] {
        log.split(separator: "\n").compactMap { line in
            // [dtrain-h1:06421] mca: bml: Using tcp btl for send to [[12632,1],0] on node dtrain-h0
            guard line.contains("mca: bml: Using "), line.hasPrefix("["), let colon = line.firstIndex(of: ":"),
                  let using = line.range(of: "Using "), let node = line.range(of: " on node ") else { return nil }
            let from = String(line[line.index(after: line.startIndex)..<colon])
            let btl = String(line[using.upperBound...].prefix { $0 != " " })
            guard btl != "self" else { return nil }
            return (from, btl, String(line[node.upperBound...]).trimmingCharacters(in: .whitespaces))
        }
    }

    /// SIGUSR1 to the launcher stops a 2-host job at a step boundary with a checkpoint (exit 75);
    /// it resumes on 1 host with the same 2 ranks and ends with the uninterrupted run's weights and
    /// training log, bit for bit (the same world size reduces in the same order, over TCP or not).
    @Test func stopAndResumeOnAnotherHostCount() throws {
        let ref = try reference(method: "lora", ranks: 2, steps: 12)
        let cluster = try NetnsCluster.up(2)
        defer { cluster.down() }
        let run = try resumableRun("mh-stop", method: "lora", steps: 12)
        var sent = false
        let stopped = try runCluster(cluster.hostfile, perHost: 1, config: run.config, run.args + ["--set", "threads=1"]) { pid in
            guard !sent, trainStepsLogged(run.out) >= 3 else { return }
            kill(pid, SIGUSR1)
            sent = true
        }
        #expect(sent && stopped.status == 75, "exit \(stopped.status)\n\(stopped.err.suffix(3000))")
        let at = try CheckpointInfo.latest(run.out).step
        #expect(at >= 2 && at < 12)
        let resumed = try runCluster(try cluster.hostfile(first: 1), perHost: 2, config: run.config,
                                     run.args + ["--set", "threads=1", "--resume", "auto"])
        #expect(resumed.status == 0, "\(resumed.err.suffix(3000))")
        #expect(resumed.err.contains("1 hosts x 2 ranks"), "\(resumed.err.prefix(500))")
        print("2 hosts stopped at step \(at), resumed on 1 host")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == ref.sha, "weights differ from the uninterrupted run's")
        #expect(try trainingLog(run.out) == trainingLog(ref.out))
    }

    /// A rank killed (SIGKILL) on the second host mid-run: the job ends within 30 s of the kill
    /// (measured: Open MPI's daemon on that host sees its child die and mpirun tears the job
    /// down), naming the rank and the host; `--resume auto` then ends with the uninterrupted
    /// run's weights.
    @Test func killedRankOnAnotherHost() throws {
        let ref = try reference(method: "lora", ranks: 2, steps: 12)
        let cluster = try NetnsCluster.up(2)
        defer { cluster.down() }
        let run = try resumableRun("mh-kill", method: "lora", steps: 12)
        let args = run.args + ["--set", "threads=1", "--set", "checkpoint.every_steps=2"]
        var killedAt: Date?
        let killed = try runCluster(cluster.hostfile, perHost: 1, config: run.config, args, timeout: 600) { _ in
            guard killedAt == nil, trainStepsLogged(run.out) >= 4, let pid = try? cluster.dtrainPids(on: "dtrain-h1").first else { return }
            kill(pid, SIGKILL)
            killedAt = Date()
        }
        let took = killedAt.map { Date().timeIntervalSince($0) } ?? .infinity
        print("rank on dtrain-h1 killed: the job ended \(String(format: "%.1f", took)) s later with exit \(killed.status)")
        #expect(killedAt != nil && killed.status != 0, "exit \(killed.status)")
        #expect(took < 30, "the job took \(took) s to end after the kill")
        let said = killed.out + killed.err
        #expect(said.contains("rank 1") && said.contains("dtrain-h1"), "\(said.suffix(2000))")
        let resumed = try runCluster(cluster.hostfile, perHost: 1, config: run.config, args + ["--resume", "auto"])
        #expect(resumed.status == 0, "\(resumed.err.suffix(3000))")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == ref.sha, "weights differ from the uninterrupted run's")
    }

    /// The asked delay is really on the links (tc netem, or launch/netdelay.c where the kernel has
    /// no netem): the median TCP round trip of a small message between two hosts grows by twice
    /// the one-way delay, within the delay line's slot and the machine's wake-up latency.
    @Test func linksCarryTheAskedDelay() throws {
        func medianRoundTripMs(_ options: [String]) throws -> Double {
            let cluster = try NetnsCluster.up(2, options)
            defer { cluster.down() }
            let server = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',5917));s.listen(1);s.settimeout(60)\nc,_=s.accept();c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\nwhile True:\n d=c.recv(64)\n if not d: break\n c.sendall(d)"
            let client = "import socket,time,statistics\nfor i in range(50):\n try: c=socket.create_connection(('dtrain-h1',5917),timeout=5); break\n except OSError: time.sleep(0.1)\nc.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1);r=[]\nfor i in range(200):\n t=time.perf_counter();c.sendall(b'x'*64);c.recv(64);r.append(time.perf_counter()-t)\nprint(statistics.median(r)*1e3)"
            let script = NetnsCluster.script
            let r = try shell("bash", ["-c", "bash \(script) exec dtrain-h1 timeout 90 python3 -c \"$0\" & bash \(script) exec dtrain-h0 timeout 90 python3 -c \"$1\"; c=$?; wait $! && exit $c", server, client])
            let ms = r.out.split(separator: "\n").compactMap { Double($0) }.last
            guard r.status == 0, let ms else { throw FixtureError(message: "round-trip probe failed (exit \(r.status)):\n\(r.out)") }
            return ms
        }
        let plain = try medianRoundTripMs(["--rate", "10gbit", "--delay", "0"])
        let delayed = try medianRoundTripMs(["--rate", "10gbit", "--delay", "1ms"])
        print(String(format: "median TCP round trip between 2 hosts: %.3f ms without delay, %.3f ms with 1 ms each way", plain, delayed))
        #expect(plain < 1.0)
        #expect(delayed - plain > 1.9 && delayed - plain < 2.6, "round trip grew by \(delayed - plain) ms, expected about 2 ms")
        // `down` stopped every delay line (a process inherits this runner's blocked signals).
        let running = (try FileManager.default.contentsOfDirectory(atPath: "/proc")).filter { pid in
            guard Int32(pid) != nil, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
            return stat.contains("(netdelay)") && !stat.contains("(netdelay) Z")
        }
        #expect(running.isEmpty, "delay lines still running after down: \(running)")
    }

    /// Links that drop 1% of packets: TCP resends them, and 2 hosts train to the same weights,
    /// bit for bit, as 2 ranks on one host; only slower.
    @Test func lossyLinkTrainsTheSame() throws {
        let ref = try reference(method: "lora", ranks: 2)
        let cluster = try NetnsCluster.up(2, ["--rate", "1gbit", "--loss", "1%"])
        defer { cluster.down() }
        let run = try resumableRun("mh-lossy", method: "lora")
        let start = Date()
        let r = try runCluster(cluster.hostfile, perHost: 1, config: run.config, run.args + ["--set", "threads=1"])
        #expect(r.status == 0, "\(r.err.suffix(3000))")
        print("2 hosts over links losing 1% of packets: \(String(format: "%.1f", Date().timeIntervalSince(start))) s for 6 steps")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == ref.sha, "weights differ from 2 ranks on one host")
    }
}

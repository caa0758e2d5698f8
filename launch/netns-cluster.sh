#!/usr/bin/env bash
# A rehearsal cluster on one machine: N network namespaces, each a "host" with its own name and
# address, joined by a bridge over shaped links, and an Open MPI launch agent that starts
# processes inside a host (Open MPI's plm_rsh_agent; no ssh). Needs root.
#
#   bash launch/netns-cluster.sh up N [--rate 10gbit] [--delay 0.2ms] [--loss 1%]
#   bash launch/netns-cluster.sh status
#   bash launch/netns-cluster.sh down
#   bash launch/cluster.sh "$(bash launch/netns-cluster.sh up 2 | tail -n 1)" 1 RUN.yaml
#
# Hosts are dtrain-h0 .. dtrain-h<N-1>, addresses 10.213.7.1 .. on one /24, each host's link to
# the bridge (which lives in its own namespace, dtrain-switch) shaped at the host's egress, so
# every packet between two hosts is shaped once: at the rate, delayed and lost as asked. Nothing
# is added to the machine's own namespace. `up` writes an Open MPI hostfile and prints its path
# as its last line; the hostfile's first line tells launch/cluster.sh to start mpirun inside
# dtrain-h0 with this script as the launch agent. `down` removes everything `up` made.
#
# Shaping uses tc netem (rate, delay, loss) when the kernel has it (CONFIG_NET_SCH_NETEM).
# Without it, the rate is shaped by tbf, loss by an nftables rule dropping that share of the
# host's outgoing packets at random, and the delay by launch/netdelay.c: an iptables NFQUEUE
# rule hands each outgoing packet's metadata to that small program, which accepts the packet the
# delay later (built here with the machine's C compiler; needs iptables and the kernel's
# CONFIG_NETFILTER_NETLINK_QUEUE). `up` says which was used; `status` shows what each link has.
set -euo pipefail

PREFIX=dtrain
SWITCH=$PREFIX-switch
STATE=/run/dtrain-netns          # hostfile, link settings
SUBNET=10.213.7
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

die() { echo "netns-cluster: $*" >&2; exit 2; }
hosts() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-h[0-9]+$" | sort -t h -k 2 -n || true; }

netem_available() {
    # Try the qdisc on a throwaway veth pair inside a scratch namespace.
    local ns=$PREFIX-probe ok=1
    ip netns add "$ns"
    ip -n "$ns" link add probe0 type veth peer name probe1
    ip netns exec "$ns" tc qdisc add dev probe0 root netem delay 1ms 2>/dev/null || ok=0
    ip netns del "$ns"
    [ "$ok" = 1 ]
}

# Time text as tc reads it ("0.2ms", "200us", "1s"; a bare number is microseconds) to microseconds.
delay_microseconds() {
    awk -v v="$1" 'BEGIN {
        if (!match(v, /^[0-9]*\.?[0-9]+/)) exit 1
        n = substr(v, 1, RLENGTH); unit = substr(v, RLENGTH + 1)
        if (unit == "" || unit == "us" || unit == "usec") f = 1; else if (unit == "ms" || unit == "msec") f = 1000
        else if (unit == "s" || unit == "sec") f = 1000000; else exit 1
        if (n * f > 10000000) exit 1
        printf "%d", n * f + 0.5 }'
}

# Whether pid $1 is a live delay line: still netdelay (not a reused pid) and not a zombie (which
# kill -0 would count as alive where nothing reaps it).
delay_line_alive() {
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = netdelay ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Starts the delay line in host $1 ($2 microseconds) and sends the host's outgoing packets to it.
start_delay_line() {
    local h="$1" us="$2"
    # The program runs in place (ip netns exec execs it; it makes its own session), so $! is its
    # pid until it says so itself; `down` stops the pid it printed.
    ip netns exec "$h" "$STATE/netdelay" "$us" > "$STATE/netdelay-$h.out" 2>&1 < /dev/null &
    local pid=$! tries=0
    echo "$pid" > "$STATE/netdelay-$h.pid"
    until grep -q '^ready ' "$STATE/netdelay-$h.out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || die "up: the delay line in $h failed: $(cat "$STATE/netdelay-$h.out")"
        tries=$((tries + 1)); [ "$tries" -le 100 ] || die "up: the delay line in $h did not start within 10 s"
        sleep 0.1
    done
    sed -n 's/^ready //p' "$STATE/netdelay-$h.out" > "$STATE/netdelay-$h.pid"
    # --queue-bypass: were the program to die, packets would pass undelayed rather than stop.
    # IPv4 only (the cluster's addresses): ARP and IPv6 pass undelayed.
    local iptables
    for iptables in iptables-legacy iptables; do
        command -v "$iptables" >/dev/null || continue
        ip netns exec "$h" "$iptables" -A OUTPUT -o eth0 -j NFQUEUE --queue-num 0 --queue-bypass 2>/dev/null && return 0
    done
    die "up: no iptables could add the NFQUEUE rule in $h (the kernel needs CONFIG_NETFILTER_XT_TARGET_NFQUEUE)"
}

# Percent text ("1%", "0.5", "0%") to hundredths of a percent.
loss_hundredths() { awk -v v="${1%\%}" 'BEGIN { if (v !~ /^[0-9]*\.?[0-9]+$/ || v > 100) exit 1; printf "%d", v * 100 + 0.5 }'; }

up() {
    local n="${1:-}"; shift || true
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 64 ] || die "up: expected a host count 1..64, got '${n}'"
    local rate=10gbit delay=0.2ms loss=0%
    while [ $# -gt 0 ]; do
        case "$1" in
            --rate) rate="${2:?--rate needs a value such as 10gbit}"; shift 2 ;;
            --delay) delay="${2:?--delay needs a value such as 0.2ms}"; shift 2 ;;
            --loss) loss="${2:?--loss needs a value such as 1%}"; shift 2 ;;
            *) die "up: unknown option '$1' (expected --rate, --delay, --loss)" ;;
        esac
    done
    [ "$(id -u)" = 0 ] || die "up: needs root (network namespaces)"
    command -v ip >/dev/null && command -v tc >/dev/null || die "up: needs iproute2 (ip, tc)"
    local hundredths; hundredths=$(loss_hundredths "$loss") || die "up: --loss '$loss': expected a percentage such as 1%"
    local delay_us; delay_us=$(delay_microseconds "$delay") || die "up: --delay '$delay': expected a time up to 10s such as 0.2ms, 200us or 0"
    [ -z "$(hosts)" ] && ! ip netns list | grep -q "^$SWITCH" || die "up: a cluster is already up (bash $SELF down first)"

    local shaping=netem
    if ! netem_available; then
        shaping=tbf
        if [ "$delay_us" -gt 0 ]; then
            command -v iptables-legacy >/dev/null || command -v iptables >/dev/null || die "up: --delay $delay without tc netem needs iptables (apt-get install iptables)"
            local cc; cc=$(command -v "${CC:-cc}" || command -v gcc || command -v clang) || die "up: --delay $delay without tc netem needs a C compiler to build launch/netdelay.c"
            mkdir -p "$STATE"
            "$cc" -O2 -o "$STATE/netdelay" "$(dirname "$SELF")/netdelay.c" || die "up: building launch/netdelay.c failed"
        fi
        if [ "$hundredths" -gt 0 ]; then
            command -v nft >/dev/null || die "up: --loss $loss without netem needs nftables (apt-get install nftables)"
        fi
    fi

    mkdir -p "$STATE"
    ip netns add "$SWITCH"
    ip -n "$SWITCH" link add br0 type bridge
    ip -n "$SWITCH" link set br0 up
    local hostfile="$STATE/hostfile" i
    {
        echo "# dtrain-netns-cluster agent=$SELF head=$PREFIX-h0"
        for ((i = 0; i < n; i++)); do echo "$PREFIX-h$i slots=64"; done
    } > "$hostfile"
    for ((i = 0; i < n; i++)); do
        local h=$PREFIX-h$i
        ip netns add "$h"
        # ip netns exec bind-mounts /etc/netns/<name>/* over /etc: each host's own name and a
        # hosts file that resolves every host.
        mkdir -p "/etc/netns/$h"
        echo "$h" > "/etc/netns/$h/hostname"
        { echo "127.0.0.1 localhost"; for ((j = 0; j < n; j++)); do echo "$SUBNET.$((j + 1)) $PREFIX-h$j"; done; } > "/etc/netns/$h/hosts"
        ip -n "$SWITCH" link add "p$i" type veth peer name eth0 netns "$h"
        ip -n "$SWITCH" link set "p$i" master br0 up
        ip -n "$h" addr add "$SUBNET.$((i + 1))/24" dev eth0
        ip -n "$h" link set lo up
        ip -n "$h" link set eth0 up
        if [ "$shaping" = netem ]; then
            ip netns exec "$h" tc qdisc add dev eth0 root netem rate "$rate" delay "$delay" loss "${loss%\%}%" limit 100000
        else
            ip netns exec "$h" tc qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 100ms
            if [ "$delay_us" -gt 0 ]; then start_delay_line "$h" "$delay_us"; fi
            if [ "$hundredths" -gt 0 ]; then
                ip netns exec "$h" nft add table inet dtrain_loss
                ip netns exec "$h" nft add chain inet dtrain_loss out '{ type filter hook output priority 0; policy accept; }'
                ip netns exec "$h" nft add rule inet dtrain_loss out oifname eth0 numgen random mod 10000 lt "$hundredths" drop
            fi
        fi
    done
    local applied applied_delay=0
    if [ "$shaping" = netem ]; then
        applied="rate $rate, delay $delay, loss $loss (tc netem)"; applied_delay=$delay
    else
        applied="rate $rate (tc tbf), no added delay, loss $loss"
        if [ "$delay_us" -gt 0 ]; then
            applied="rate $rate (tc tbf), delay $delay (netdelay), loss $loss"; applied_delay=$delay; shaping=tbf+netdelay
        fi
        [ "$hundredths" -gt 0 ] && applied="$applied (nftables)"
    fi
    echo "hosts=$n shaping=$shaping rate=$rate delay=$applied_delay loss=$loss" > "$STATE/links"
    echo "netns-cluster: $n hosts up ($PREFIX-h0 .. $PREFIX-h$((n - 1)), $SUBNET.1 ..), each link: $applied" >&2
    echo "$hostfile"
}

down() {
    local h pidfile pid
    for pidfile in "$STATE"/netdelay-*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if delay_line_alive "$pid"; then
            kill "$pid" 2>/dev/null || true
            sleep 0.1
            # Still alive: it ignored SIGTERM.
            if delay_line_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
    done
    for h in $(hosts); do ip netns del "$h" 2>/dev/null || true; rm -rf "/etc/netns/$h"; done
    ip netns del "$SWITCH" 2>/dev/null || true
    ip netns del "$PREFIX-probe" 2>/dev/null || true
    rmdir /etc/netns 2>/dev/null || true
    rm -rf "$STATE"
}

status() {
    local list; list=$(hosts)
    [ -n "$list" ] || { echo "netns-cluster: no cluster up"; return 0; }
    cat "$STATE/links" 2>/dev/null || true
    local h
    for h in $list; do
        local delay_line=""
        if [ -f "$STATE/netdelay-$h.pid" ]; then
            if delay_line_alive "$(cat "$STATE/netdelay-$h.pid")"; then delay_line=" | netdelay pid $(cat "$STATE/netdelay-$h.pid")"
            else delay_line=" | netdelay NOT RUNNING (packets pass undelayed)"; fi
        fi
        echo "$h $(ip -n "$h" -4 -o addr show dev eth0 | awk '{print $4}') | $(ip netns exec "$h" tc qdisc show dev eth0 | head -n 1)$delay_line"
    done
    echo "hostfile: $STATE/hostfile"
}

# Open MPI's launch agent, called as ssh would be: `agent [ssh options] HOST COMMAND...`, where
# COMMAND is text for the remote shell. Runs it inside HOST's namespace, under HOST's name.
agent() {
    while [ $# -gt 0 ] && [[ "$1" == -* ]]; do shift; done
    local host="${1:?agent: expected a host name}"; shift
    ip netns list | grep -q "^$host\b" || { echo "netns-cluster agent: no host '$host' (is the cluster up?)" >&2; exit 255; }
    exec ip netns exec "$host" unshare --uts /bin/sh -c "hostname $host; $*"
}

# Runs one command on HOST, as a login there would (its namespace, its name).
run_on() {
    local host="${1:?exec: expected a host name}"; shift
    [ $# -gt 0 ] || die "exec: expected a command after the host"
    ip netns list | grep -q "^$host\b" || die "exec: no host '$host' (is the cluster up?)"
    exec ip netns exec "$host" unshare --uts /bin/sh -c 'hostname "$0"; exec "$@"' "$host" "$@"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    agent) shift; agent "$@" ;;
    exec) shift; run_on "$@" ;;
    *) echo "usage: bash launch/netns-cluster.sh up N [--rate 10gbit] [--delay 0.2ms] [--loss 1%] | down | status | exec HOST CMD..." >&2; exit 2 ;;
esac

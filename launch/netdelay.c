// A delay line for the rehearsal cluster on kernels without tc netem (launch/netns-cluster.sh
// builds and starts it). It binds an nfnetlink queue in the current network namespace and holds
// each packet an iptables NFQUEUE rule sends it for a fixed time before accepting it, in arrival
// order, so a host's outgoing packets reach the wire DELAY later, as netem's `delay` would.
//
//   netdelay DELAY_US [QUEUE]      prints "ready PID" once the queue is bound, then runs until killed
//
// Only each packet's metadata crosses to user space (copy mode META) and GSO packets stay whole,
// so no packet's bytes are copied. The verdicts are batched: one message accepts every held
// packet whose time has come (packet ids rise in arrival order, and a batch verdict covers every
// id up to the one it names). Wake-ups are what costs (on a virtual machine, tens of microseconds
// of CPU each), so while packets are held the program does not wake for each new one: it sleeps
// to the next release or for at most SLOT, then takes every packet that arrived meanwhile, dated
// to the middle of that sleep (so a delay is off by at most half a slot, and a busy link costs at
// most 1/SLOT wake-ups a second); an idle one wakes it on the first packet. Timer wake-ups come late on a
// virtual machine; the program measures by how much and sets its alarms that much earlier.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { HELD_CAPACITY = 1 << 16, MESSAGE_BYTES = 8192 };
static const uint64_t SLOT_NS = 100000;

// Packets waiting, oldest first: a ring of (id, release time).
static uint32_t held_id[HELD_CAPACITY];
static uint64_t held_release_ns[HELD_CAPACITY];
static size_t held_head, held_count;

static int netlink;
static uint16_t queue_number;
static uint32_t sequence;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void fail(const char *what) {
    fprintf(stderr, "netdelay: %s: %s\n", what, strerror(errno));
    exit(1);
}

// Message under construction: netlink header, nfnetlink header, then attributes.
struct message {
    char bytes[256] __attribute__((aligned(NLMSG_ALIGNTO)));
    size_t length;
};

static void message_start(struct message *m, uint8_t type, uint16_t flags) {
    memset(m, 0, sizeof *m);
    struct nlmsghdr *h = (struct nlmsghdr *)m->bytes;
    h->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | type;
    h->nlmsg_flags = NLM_F_REQUEST | flags;
    h->nlmsg_seq = ++sequence;
    struct nfgenmsg *g = (struct nfgenmsg *)NLMSG_DATA(h);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htons(queue_number);
    m->length = NLMSG_LENGTH(sizeof *g);
}

static void message_attribute(struct message *m, uint16_t type, const void *value, size_t size) {
    struct nlattr *a = (struct nlattr *)(m->bytes + NLMSG_ALIGN(m->length));
    a->nla_type = type;
    a->nla_len = (uint16_t)(NLA_HDRLEN + size);
    memcpy((char *)a + NLA_HDRLEN, value, size);
    m->length = NLMSG_ALIGN(m->length) + NLA_ALIGN(a->nla_len);
}

static void message_send(struct message *m) {
    struct nlmsghdr *h = (struct nlmsghdr *)m->bytes;
    h->nlmsg_len = (uint32_t)m->length;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(netlink, m->bytes, m->length, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) fail("send");
}

// Sends a configuration request (one or two attributes) and waits for the kernel's
// acknowledgement. The first message back is taken as the reply: no packet can come before it,
// because the NFQUEUE rule is added only once this program has said it is ready.
static void configure(uint16_t attribute, const void *value, size_t size,
                      uint16_t attribute2, const void *value2, size_t size2, const char *what) {
    struct message m;
    message_start(&m, NFQNL_MSG_CONFIG, NLM_F_ACK);
    message_attribute(&m, attribute, value, size);
    if (value2) message_attribute(&m, attribute2, value2, size2);
    message_send(&m);
    char reply[MESSAGE_BYTES] __attribute__((aligned(NLMSG_ALIGNTO)));
    ssize_t n = recv(netlink, reply, sizeof reply, 0);
    if (n < 0) fail(what);
    struct nlmsghdr *h = (struct nlmsghdr *)reply;
    if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(h);
        if (e->error != 0) {
            errno = -e->error;
            fail(what);
        }
    }
}

static void accept_through(uint32_t id) {
    struct message m;
    message_start(&m, NFQNL_MSG_VERDICT_BATCH, 0);
    struct nfqnl_msg_verdict_hdr verdict = {.verdict = htonl(NF_ACCEPT), .id = htonl(id)};
    message_attribute(&m, NFQA_VERDICT_HDR, &verdict, sizeof verdict);
    message_send(&m);
}

// Reads every message waiting on the socket; queues each packet with its release time.
static void receive_packets(uint64_t arrival_ns, uint64_t delay_ns) {
    static char buffer[1 << 16] __attribute__((aligned(NLMSG_ALIGNTO)));
    for (;;) {
        ssize_t n = recv(netlink, buffer, sizeof buffer, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            // The socket overflowed: the kernel accepted those packets undelayed (FAIL_OPEN).
            if (errno == ENOBUFS) continue;
            fail("receive");
        }
        uint64_t release = arrival_ns + delay_ns;
        int remaining = (int)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, remaining); h = NLMSG_NEXT(h, remaining)) {
            if ((h->nlmsg_type & 0xff) != NFQNL_MSG_PACKET) continue;
            int attributes_length = (int)h->nlmsg_len - NLMSG_LENGTH(sizeof(struct nfgenmsg));
            struct nlattr *a = (struct nlattr *)((char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(struct nfgenmsg)));
            while (attributes_length >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= attributes_length) {
                if ((a->nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR) {
                    struct nfqnl_msg_packet_hdr header;
                    memcpy(&header, (char *)a + NLA_HDRLEN, sizeof header);
                    if (held_count == HELD_CAPACITY) {  // full: let the oldest go early
                        accept_through(held_id[held_head]);
                        held_head = (held_head + 1) % HELD_CAPACITY;
                        held_count--;
                    }
                    size_t slot = (held_head + held_count) % HELD_CAPACITY;
                    held_id[slot] = ntohl(header.packet_id);
                    held_release_ns[slot] = release;
                    held_count++;
                    break;
                }
                attributes_length -= NLA_ALIGN(a->nla_len);
                a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len));
            }
        }
    }
}

// Keeps a running mean of how late timed wake-ups come (woke - alarm), at most one slot.
static void note_lateness(uint64_t woke, uint64_t alarm, uint64_t *lateness_ns) {
    uint64_t late = woke > alarm ? woke - alarm : 0;
    if (late > SLOT_NS) late = SLOT_NS;
    *lateness_ns = (*lateness_ns * 7 + late) / 8;
}

int main(int argc, char **argv) {
    char *end = NULL;
    long delay_us = argc >= 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc < 2 || argc > 3 || *end != 0 || delay_us < 0 || delay_us > 10000000) {
        fprintf(stderr, "usage: netdelay DELAY_US [QUEUE]   (DELAY_US: 0..10000000)\n");
        return 2;
    }
    queue_number = argc == 3 ? (uint16_t)atoi(argv[2]) : 0;
    uint64_t delay_ns = (uint64_t)delay_us * 1000u;
    // A parent may have blocked or ignored signals (a test runner's threads block most of them,
    // and a child inherits that): `down` must be able to stop this program with SIGTERM.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    // Timers may fire this late by default (50 us); a 200 us delay needs them on time.
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    // A wire does not wait for a CPU: on a small machine MPI ranks spin on every core while they
    // wait for messages, and a delay line at normal priority would get a core only when the
    // scheduler's time slice ends (milliseconds). Real-time priority runs it as soon as it wakes.
    struct sched_param priority = {.sched_priority = 50};
    if (sched_setscheduler(0, SCHED_FIFO, &priority) != 0)
        fprintf(stderr, "netdelay: warning: no real-time priority (%s); delays stretch when the CPUs are busy\n", strerror(errno));

    netlink = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
    if (netlink < 0) fail("netlink socket");
    int buffer_bytes = 8 << 20;
    if (setsockopt(netlink, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof buffer_bytes) < 0)
        setsockopt(netlink, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
    struct sockaddr_nl self = {.nl_family = AF_NETLINK};
    if (bind(netlink, (struct sockaddr *)&self, sizeof self) < 0) fail("netlink bind");

    struct nfqnl_msg_config_cmd bind_command = {.command = NFQNL_CFG_CMD_BIND, .pf = htons(AF_INET)};
    configure(NFQA_CFG_CMD, &bind_command, sizeof bind_command, 0, NULL, 0, "bind queue");
    struct nfqnl_msg_config_params parameters = {.copy_range = htonl(0), .copy_mode = NFQNL_COPY_META};
    configure(NFQA_CFG_PARAMS, &parameters, sizeof parameters, 0, NULL, 0, "set copy mode");
    uint32_t max_length = htonl(HELD_CAPACITY);
    configure(NFQA_CFG_QUEUE_MAXLEN, &max_length, sizeof max_length, 0, NULL, 0, "set queue length");
    // GSO: large segments stay whole; FAIL_OPEN: were the socket to overflow, accept, not drop.
    uint32_t flags = htonl(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN);
    configure(NFQA_CFG_FLAGS, &flags, sizeof flags, NFQA_CFG_MASK, &flags, sizeof flags, "set flags");
    // A session of its own (so the caller's terminal signals do not reach it), in this process:
    // the pid printed is the one `down` stops.
    setsid();
    printf("ready %d\n", (int)getpid());
    fflush(stdout);

    struct pollfd readable = {.fd = netlink, .events = POLLIN};
    uint64_t lateness_ns = 0;  // running mean of how late a timed wake-up comes
    for (;;) {
        if (held_count == 0) {
            // Idle: wait for the next packet, dated when it wakes us.
            if (ppoll(&readable, 1, NULL, NULL) < 0 && errno != EINTR) fail("poll");
            receive_packets(now_ns(), delay_ns);
        } else {
            // Busy: sleep to the next release or for one slot, then take what came meanwhile.
            uint64_t start = now_ns(), target = held_release_ns[held_head];
            if (target > start + SLOT_NS) target = start + SLOT_NS;
            // Early by the usual lateness; when the target is nearer than that, plainly to it (a
            // wake-up a little late, rather than spinning until the target).
            uint64_t alarm = target > start + lateness_ns ? target - lateness_ns : target;
            if (alarm > start) {
                struct timespec wait = {.tv_sec = (time_t)((alarm - start) / 1000000000u), .tv_nsec = (long)((alarm - start) % 1000000000u)};
                nanosleep(&wait, NULL);
                note_lateness(now_ns(), alarm, &lateness_ns);
            }
            // Dated to the middle of the sleep, but never more than half a slot before the
            // wake-up: after a wake-up that came very late, a packet dated too early would leave
            // early, while dated late it only leaves late, as it would have anyway.
            uint64_t woke = now_ns(), half = (woke - start) / 2;
            receive_packets(woke - (half < SLOT_NS / 2 ? half : SLOT_NS / 2), delay_ns);
        }
        uint64_t now = now_ns();
        size_t released = 0;
        while (released < held_count && held_release_ns[(held_head + released) % HELD_CAPACITY] <= now) released++;
        if (released > 0) {
            accept_through(held_id[(held_head + released - 1) % HELD_CAPACITY]);
            held_head = (held_head + released) % HELD_CAPACITY;
            held_count -= released;
        }
    }
}

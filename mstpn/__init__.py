"""mstpn: memristive short-term-plasticity synapses on an FPGA, playing Atari Pong.

The core package holds the facts that every part shares (:mod:`mstpn.spec`) and the bit-exact
golden model (:mod:`mstpn.model`). The gateware (:mod:`mstpn.hdl`), the host (:mod:`mstpn.host`),
the simulated board (:mod:`mstpn.sim`) and the board files (:mod:`mstpn.boards`) import the core;
the core imports none of them.
"""

__version__ = "0.1.0"

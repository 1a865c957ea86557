"""The SCF recovery cascade: try, record, and never hand back an unconverged SCF.

`run_cascade` runs a list of strategies on copies of one PySCF SCF object (so the
density-fitting tensors and DFT grids are built once) until one converges. Every
attempt becomes a plain dict in the returned list, converged or not.

Strategies, in the default order:

- ``default``      the user's settings; the reused guess if one was given.
- ``cold_start``   only after a reused guess failed: the same with the cold guess.
- ``more_cycles``  DIIS with a larger subspace and more cycles, continuing from the
                   density the previous attempt ended on.
- ``level_shift``  a 0.5 Ha virtual-orbital level shift, from the cold guess.
- ``damping``      Fock damping (0.5) for the first cycles before DIIS starts.
- ``newton``       second-order SCF (``mf.newton()``), from the cold guess.
- ``guess:NAME``   second-order SCF from a different initial guess
                   (``minao``, ``atom``, ``huckel``; the user's own guess is skipped).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase.units import Hartree

logger = logging.getLogger(__name__)

DEFAULT_RECOVERY: tuple[str, ...] = (
    "more_cycles",
    "level_shift",
    "damping",
    "newton",
    "guess:minao",
    "guess:atom",
    "guess:huckel",
)
KNOWN_STRATEGIES = frozenset(
    {"more_cycles", "level_shift", "damping", "newton", "guess:minao", "guess:atom", "guess:huckel"}
)
LEVEL_SHIFT_HA = 0.5
DAMPING_FACTOR = 0.5
DAMPING_CYCLES = 8
RECOVERY_DIIS_SPACE = 12


@dataclass
class CascadeResult:
    """The converged SCF object and what it took to get it."""

    mf: Any
    attempts: list[dict[str, Any]]

    @property
    def n_scf_cycles(self) -> int:
        """SCF cycles summed over all attempts (second-order SCF: macro iterations)."""
        return int(sum(a["n_cycles"] for a in self.attempts))


def check_strategies(strategies: Sequence[str]) -> tuple[str, ...]:
    """Return ``strategies`` as a tuple; raise ValueError naming any unknown one."""
    unknown = [s for s in strategies if s not in KNOWN_STRATEGIES]
    if unknown:
        raise ValueError(f"unknown SCF recovery strategies {unknown}; known: {sorted(KNOWN_STRATEGIES)}")
    return tuple(strategies)


def _configure(mf: Any, strategy: str, *, recovery_max_cycle: int) -> Any:
    """A configured copy of ``mf`` for one strategy (the original is left untouched)."""
    trial = mf.copy()
    if strategy in ("default", "cold_start"):
        return trial
    trial.max_cycle = recovery_max_cycle
    if strategy == "more_cycles":
        trial.diis_space = RECOVERY_DIIS_SPACE
    elif strategy == "level_shift":
        trial.level_shift = LEVEL_SHIFT_HA
    elif strategy == "damping":
        trial.damp = DAMPING_FACTOR
        trial.diis_start_cycle = DAMPING_CYCLES
    elif strategy == "newton" or strategy.startswith("guess:"):
        trial = trial.newton()
        trial.max_cycle = recovery_max_cycle
        trial.verbose = 0
    return trial


def _initial_dm(mf: Any, strategy: str, *, dm_reuse, dm_last) -> tuple[Any, str]:
    """The starting density for ``strategy`` and a word saying where it came from."""
    if strategy == "default" and dm_reuse is not None:
        return dm_reuse, "reuse"
    if strategy == "more_cycles" and dm_last is not None:
        return dm_last, "previous_attempt"
    guess = strategy.split(":", 1)[1] if strategy.startswith("guess:") else mf.init_guess
    return mf.get_init_guess(mf.mol, guess), guess


def _run_one(mf: Any, strategy: str, dm0, guess: str) -> tuple[dict[str, Any], Any]:
    """Run one attempt; return its record and the final density (None on exceptions)."""
    seen: list[int] = []

    def count_cycles(envs: dict[str, Any]) -> None:
        seen.append(int(envs.get("cycle", envs.get("imacro", -1))))

    mf.callback = count_cycles
    start = time.perf_counter()
    record: dict[str, Any] = {"strategy": strategy, "guess": guess, "converged": False}
    dm_final = None
    try:
        e_tot = mf.kernel(dm0=dm0)
        finite = bool(np.isfinite(e_tot))
        record["converged"] = bool(mf.converged) and finite
        record["energy_eV"] = float(e_tot) * Hartree if finite else None
        record["error"] = None if record["converged"] else (
            "SCF did not converge" if finite else "SCF energy is not finite")
        dm_final = mf.make_rdm1() if finite else None
    except Exception as err:  # noqa: BLE001 - any PySCF failure is one failed attempt
        record["energy_eV"] = None
        record["error"] = f"{type(err).__name__}: {err}"
    record["n_cycles"] = max(seen) + 1 if seen else 0
    record["wall_s"] = time.perf_counter() - start
    return record, dm_final


def run_cascade(
    mf: Any,
    *,
    recovery: Sequence[str] = DEFAULT_RECOVERY,
    recovery_max_cycle: int = 100,
    dm_reuse=None,
    on_fail: Callable[[str, list[dict[str, Any]]], Exception],
) -> CascadeResult:
    """Run ``mf`` and, if it does not converge, each recovery strategy in turn.

    Args:
        mf: a configured, not yet run PySCF SCF object (verbose 0).
        recovery: recovery strategy names tried after ``default`` (see module doc).
        recovery_max_cycle: the cycle limit for every recovery attempt.
        dm_reuse: a starting density from a nearby frame, or None for a cold start.
        on_fail: builds the exception raised when nothing converged.

    Returns:
        the converged SCF object (``converged`` is True) and every attempt.

    Raises:
        whatever ``on_fail(reason, attempts)`` returns, when every attempt failed.
    """
    strategies = ["default"]
    if dm_reuse is not None:
        strategies.append("cold_start")
    strategies += [s for s in recovery if s != f"guess:{mf.init_guess}"]
    attempts: list[dict[str, Any]] = []
    dm_last = None
    for strategy in strategies:
        trial = _configure(mf, strategy, recovery_max_cycle=recovery_max_cycle)
        try:
            dm0, guess = _initial_dm(mf, strategy, dm_reuse=dm_reuse, dm_last=dm_last)
        except Exception as err:  # noqa: BLE001 - a guess that cannot be built is skipped
            attempts.append({"strategy": strategy, "guess": strategy, "converged": False,
                             "n_cycles": 0, "wall_s": 0.0, "energy_eV": None,
                             "error": f"initial guess failed: {type(err).__name__}: {err}"})
            continue
        record, dm_final = _run_one(trial, strategy, dm0, guess)
        attempts.append(record)
        logger.debug("SCF attempt %s", record)
        if record["converged"]:
            if len(attempts) > 1:
                logger.info("SCF recovered by %r after %d attempts", strategy, len(attempts))
            return CascadeResult(mf=trial, attempts=attempts)
        if dm_final is not None:
            dm_last = dm_final
    reason = attempts[-1]["error"] or "SCF did not converge"
    logger.warning("SCF failed after %d attempts: %s", len(attempts), reason)
    raise on_fail(f"SCF did not converge after {len(attempts)} attempts; last: {reason}", attempts)

"""The reference backends a campaign config describes (``qm_backends.get_backend``).

``flows.config`` is the schema only; this module builds what it describes: the reference
backend (:func:`make_backend`), the backend that drives the initial MD
(:func:`make_initial_md_backend`) and the level of theory the reference labels carry
(:func:`level_of_theory`, computed once per config object).
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.config import CampaignConfig


def backend_options(config: CampaignConfig) -> dict[str, Any]:
    """Keyword arguments for ``qm_backends.get_backend(reference.backend, ...)``."""
    reference = config.reference
    options: dict[str, Any] = {
        "method": reference.method,
        "charge": config.system.charge,
        "multiplicity": config.system.multiplicity,
    }
    if reference.backend.lower() == "pyscf":
        options.update(basis=reference.basis, density_fit=reference.density_fit,
                       conv_tol_Ha=reference.conv_tol_Ha, max_cycle=reference.max_cycle)
    options.update(reference.options)
    return options


def make_backend(config: CampaignConfig) -> Any:
    """A new reference backend of ``config`` (``[reference]``, the system's charge and
    multiplicity); each call builds its own (backends keep per-calculation state)."""
    from qm_backends import get_backend

    return get_backend(config.reference.backend, **backend_options(config))


def make_initial_md_backend(config: CampaignConfig) -> Any:
    """The backend that drives ``loop.initial_sampler = "md"``: the reference itself
    when ``loop.initial_md_backend`` names its backend, else that backend with the
    system's charge and multiplicity."""
    from qm_backends import get_backend

    name = config.loop.initial_md_backend
    if name == config.reference.backend.lower():
        return make_backend(config)
    return get_backend(name, charge=config.system.charge, multiplicity=config.system.multiplicity)


#: id(config) -> the backend's level of theory; an entry leaves with its config object
_LEVELS: dict[int, dict[str, Any]] = {}
_LEVELS_LOCK = threading.Lock()


def level_of_theory(config: CampaignConfig) -> dict[str, Any]:
    """The reference backend's own canonical level-of-theory dict (what fixes the
    numbers): built once per config object (configs are frozen), a copy each call."""
    key = id(config)
    with _LEVELS_LOCK:
        level = _LEVELS.get(key)
    if level is None:
        level = make_backend(config).level_of_theory
        with _LEVELS_LOCK:
            if key not in _LEVELS:
                _LEVELS[key] = level
                weakref.finalize(config, _LEVELS.pop, key, None)
            level = _LEVELS[key]
    return copy.deepcopy(level)


def remember_level_of_theory(config: CampaignConfig, backend: Any) -> None:
    """Cache ``backend``'s level of theory for ``config`` (a backend ``config`` built
    anyway, e.g. while validating it), so :func:`level_of_theory` builds none."""
    try:
        level = copy.deepcopy(backend.level_of_theory)
    except Exception:  # noqa: BLE001 - level_of_theory() will build one and say what is wrong
        return
    key = id(config)
    with _LEVELS_LOCK:
        if key not in _LEVELS:
            _LEVELS[key] = level
            weakref.finalize(config, _LEVELS.pop, key, None)

"""Does active learning need fewer reference labels than random sampling?

One run builds (or reads from ``bench/data/<name>/``) two committee-free data sets
labelled at the example campaign's reference level: a fixed **test set** (xTB MD at
300 K and 600 K plus torsion scans; never used for training or selection) and a
**random pool** (xTB MD at the campaign's exploration temperatures, shuffled). Then:

- **random**: committees trained from scratch on N random pool frames, for each N and seed;
- **active learning**: alflow's ``active_learning`` Prefect flow, one campaign per seed,
  run generation by generation until its label budget is spent; after each generation a
  committee is trained from scratch, with the same settings as the random curve, on
  every label the campaign had paid for so far (its training, validation and reference
  frames). The campaign's own (warm-started) committee is evaluated too.

Both curves are measured on the test set (force MAE is per component, as in MD17
papers). The final campaign committees also give the uncertainty figures: Spearman rank
correlation between ``max_force_dev`` and the true largest per-atom force error, and the
coverage of the nominal 95% interval, raw and calibrated (calibration fitted by the
campaign on its validation frames, and refitted on held-out pool frames). Results are cached per point in
``bench/data/<name>/results.json``, so an interrupted run resumes.

    .venv/bin/python -m bench.data_efficiency [--preset full|tiny] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import numpy as np  # noqa: E402

from bench._learning_data import DataSpec, Sampling, labelled_set, take  # noqa: E402
from bench._report import BENCHMARKS_MD, machine_line, markdown_table, write_section  # noqa: E402
from bench.learning_report import (SUBSET_FIELD, curve_rows, headline, plot_curves, retrained_with,  # noqa: E402
                                   subset_errors, subset_rows, uncertainty_metrics)

ROOT = Path(__file__).resolve().parents[1]
#: chi-square(3) 95% quantile: |dF_i| <= sqrt(q/3) * sigma_i for isotropic Gaussian errors
COVERAGE_FACTOR = float(np.sqrt(7.814727903251178 / 3))


@dataclass(frozen=True)
class Variant:
    """One active-learning protocol: the example campaign with ``overrides`` on top of the
    preset's. Campaigns live in ``<name>-seed<s>/``, results under ``<name>/seed<s>/``."""

    name: str
    label: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None  # None: the preset's
    al_labels: int | None = None  # a smaller label budget than the preset's


@dataclass(frozen=True)
class Preset:
    example: str  # campaign TOML the active-learning runs start from
    data: DataSpec
    sizes: tuple[int, ...]  # random-curve label counts
    seeds: tuple[int, ...]
    al_labels: int  # stop a campaign once it has this many labels
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: random N frames are drawn from the pool's first max(N, draw_from) frames (None: the
    #: whole pool); the pool is shuffled, so every prefix is itself a random sample
    draw_from: int | None = None
    #: pool frames (its first ones) that calibrate the campaign committees' uncertainty
    #: for the held-out coverage; campaigns never see the pool
    held_out: int = 0
    variants: tuple[Variant, ...] = (Variant("al", "active learning"),)
    #: other architectures the curves can be retrained with (``--architecture``): name ->
    #: {"committee": ..., "train": ...} overrides of those sections of the example (the
    #: preset's own train overrides apply too); results keyed ``<name>:...``
    architectures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def seeds_of(self, variant: Variant) -> tuple[int, ...]:
        return variant.seeds or self.seeds

    def budget_of(self, variant: Variant) -> int:
        """Labels a campaign of ``variant`` runs to."""
        return min(self.al_labels, variant.al_labels or self.al_labels)


#: the MACE committee of bench.mace_vs_bpnn (mace_run_train's small model)
MACE_COMMITTEE = {"architecture": "mace", "cutoff_A": 5.0, "num_channels": 32, "max_L": 1, "correlation": 3,
                  "num_interactions": 2}

#: al-mace's committee and training (2 float32 members, MACE's recipe lr 1e-2 + EMA), and
#: the random draws retrained with them (``--architecture mace``)
MACE_CAMPAIGN = {"committee": {**MACE_COMMITTEE, "members": 2, "dtype": "float32"},
                 "train": {"learning_rate": 1e-2, "ema_decay": 0.99, "max_epochs": 100}}

#: generation 0 from GFN2-xTB MD at 500 K (the ethanol example's start)
XTB_START = {"initial_sampler": "md", "initial_md_backend": "xtb", "initial_temperature_K": 500,
             "initial_md_interval_steps": 100}


def mace_stretch(select: dict | None = None, **explore: object) -> dict:
    """al-mace-stretch's settings (the MACE committee at 300/700/1200 K, trust_hi 1 eV/Å, 40%
    of the picks for the hottest replica, break precursors, bond filter at 1.5 x covalent
    radii), with ``select`` and ``explore`` changed where given."""
    return {"loop": {**XTB_START, "convergence": {
                "accurate_fraction": 0.9, "patience_generations": 2, "force_mae_target_eV_A": 0.025}},
            "select": {"adaptive_trust_lo": True, "trust_hi_eV_A": 1.0, "hot_share": 0.4,
                       "break_precursors": True, "bond_scale": 1.5, **(select or {})},
            **MACE_CAMPAIGN, "explore": {"dtype": "float32", "temperatures_K": [300, 700, 1200], **explore}}

PRESETS = {
    "full": Preset(
        example="examples/ethanol.toml",
        data=DataSpec("ethanol-pbe-def2svp", "CH3CH2OH", {},
                      test=Sampling({300: 50, 600: 50}, interval_steps=100, torsion_frames=50, seed=1),
                      pool=Sampling({300: 134, 500: 133, 700: 133}, interval_steps=100, seed=2)),
        sizes=(25, 50, 100, 200, 300, 400), seeds=(0, 1, 2), al_labels=200,
        # the points up to 200 labels were computed when 200 pool frames were labelled
        draw_from=200, held_out=50,
        # generation 0 from harmonic normal modes at 300 K (the example's start until
        # 2026-11-22) and from GFN2-xTB MD at 500 K (the example's start since)
        variants=(Variant("al", "active learning, normal-mode start",
                          {"loop": {"initial_sampler": "normal_modes", "initial_temperature_K": 300}}),
                  Variant("al-mdinit", "active learning, xTB-MD start", {"loop": XTB_START},
                          seeds=(0, 1, 2), al_labels=200),
                  # the xTB-start campaigns converge by themselves at ~150 labels: their
                  # window empties (0-1 frames in [trust_lo, trust_hi) from generation 5)
                  # while the test error is still ~45 meV/Å
                  Variant("al-adaptive", "active learning, xTB-MD start, adaptive trust_lo",
                          {"loop": {**XTB_START, "convergence": {
                              "accurate_fraction": 0.9, "patience_generations": 2, "force_mae_target_eV_A": 0.025}},
                           "select": {"adaptive_trust_lo": True}},
                          seeds=(0,)),
                  # exploration biases (issue 19), judged on the rare-event set too
                  # (bench.rare_events): the xTB-MD start with plain Langevin rerun (its
                  # committees are kept for that set), with UDD and with metadynamics
                  # (issue 19 compares at 25-300 labels: these run to 300, `--al-labels 300`;
                  # campaigns of 200 resume from where they stopped)
                  Variant("al-thermal", "active learning, xTB-MD start, Langevin (rerun)",
                          {"loop": XTB_START}, seeds=(0,), al_labels=300),
                  Variant("al-udd", "active learning, xTB-MD start, UDD bias",
                          {"loop": XTB_START, "explore": {"bias": "udd"}}, seeds=(0,), al_labels=300),
                  Variant("al-metad", "active learning, xTB-MD start, torsion metadynamics",
                          {"loop": XTB_START, "explore": {"bias": "metad"}}, seeds=(0,), al_labels=300),
                  # the rare-event set's high-energy frames come from xTB MD at 1000-1500 K,
                  # where neither bias drives the replicas: al-thermal's protocol explored
                  # at 300, 700 and 1200 K instead of 300, 500 and 700 K
                  Variant("al-hot", "active learning, xTB-MD start, Langevin at 300/700/1200 K",
                          {"loop": XTB_START, "explore": {"temperatures_K": [300, 700, 1200]}}, seeds=(0,),
                          al_labels=200),
                  # al-hot's 1200 K replicas reach the high-energy region, but 7 137 of its
                  # 33 000 frames were past trust_hi (0.5 eV/Å) and none of them could be
                  # labelled: al-hot with the window widened to 1 eV/Å (the bond filter kept)
                  Variant("al-hot-wide", "active learning, xTB-MD start, Langevin at 300/700/1200 K, "
                          "trust_hi 1 eV/Å",
                          {"loop": XTB_START, "explore": {"temperatures_K": [300, 700, 1200]},
                           "select": {"trust_hi_eV_A": 1.0}}, seeds=(0,), al_labels=200),
                  # al-hot-wide with every generation trained from scratch ([train] warm_start
                  # = false): the campaigns' warm-started committees were 2.5-3.4x overconfident on
                  # the rare set's hot frames, their labels retrained from scratch 1.9-2.3x
                  Variant("al-hot-scratch", "active learning, xTB-MD start, Langevin at 300/700/1200 K, "
                          "trust_hi 1 eV/Å, committees from scratch",
                          {"loop": XTB_START, "explore": {"temperatures_K": [300, 700, 1200]},
                           "select": {"trust_hi_eV_A": 1.0}, "train": {"warm_start": False}}, seeds=(0,),
                          al_labels=200),
                  # al-hot-wide with shrink and perturb at every warm start (Ash & Adams 2020):
                  # each member starts from 0.5 x its predecessor + 0.3 x a fresh draw of its
                  # own, to keep the warm start's head start without all of the agreement
                  # the members inherit
                  Variant("al-hot-sp", "active learning, xTB-MD start, Langevin at 300/700/1200 K, "
                          "trust_hi 1 eV/Å, shrink-and-perturb warm starts",
                          {"loop": XTB_START, "explore": {"temperatures_K": [300, 700, 1200]},
                           "select": {"trust_hi_eV_A": 1.0},
                           "train": {"warm_start_shrink": 0.5, "warm_start_perturb": 0.3}}, seeds=(0,),
                          al_labels=200),
                  # al-hot-wide with 10 of each generation's 25 picks reserved for the 1200 K
                  # replicas' frames ([select] hot_share), below trust_lo included: every
                  # warm-started campaign called half the rare set's hot frames accurate
                  # (error 2.5-4x the disagreement), so the window alone never labels them
                  Variant("al-hot-share", "active learning, xTB-MD start, Langevin at 300/700/1200 K, "
                          "trust_hi 1 eV/Å, 40% of the picks reserved for the 1200 K replicas",
                          {"loop": XTB_START, "explore": {"temperatures_K": [300, 700, 1200]},
                           "select": {"trust_hi_eV_A": 1.0, "hot_share": 0.4}}, seeds=(0,), al_labels=200),
                  # issue 20: al-thermal's protocol with frames judged on max_force_dev +
                  # 10 (eV/Å per e·Å) x the members' dipole spread (select.dipole_weight)
                  Variant("al-dipole", "active learning, xTB-MD start, dipole spread in the selection",
                          {"loop": XTB_START, "select": {"dipole_weight": 10.0}}, seeds=(0,), al_labels=100),
                  # issue 18: the same protocol as al-adaptive, driven by a MACE committee
                  # (2 float32 members, MACE's recipe lr 1e-2 + EMA, explored in float32)
                  Variant("al-mace", "active learning, MACE committee, xTB-MD start, adaptive trust_lo",
                          {"loop": {**XTB_START, "convergence": {
                              "accurate_fraction": 0.9, "patience_generations": 2, "force_mae_target_eV_A": 0.025}},
                           "select": {"adaptive_trust_lo": True},
                           **MACE_CAMPAIGN, "explore": {"dtype": "float32"}},
                          seeds=(0, 1, 2), al_labels=200),
                  # issue 19 with the MACE committee: al-mace reaches 52 meV/Å on the rare set at
                  # 153 labels, 73 on its hot frames (the scans: 10-12); al-mace with al-hot-share's
                  # exploration (1200 K replicas, trust_hi 1 eV/Å, 40% of the picks reserved for them)
                  Variant("al-mace-hot-share", "active learning, MACE committee, xTB-MD start, adaptive "
                          "trust_lo, Langevin at 300/700/1200 K, trust_hi 1 eV/Å, 40% of the picks reserved "
                          "for the 1200 K replicas, the last intact frame before a replica comes apart labelled "
                          "(break_precursors, one per replica per generation; seed 0 rerun on 2026-12-03 wholly under "
                          "today's code; seeds 1 and 2 had the cap from generation 0 but not the sanity filters ahead of "
                          "trust_lo and the reset of a broken replica, seed 2 got those from generation 10 on)",
                          {"loop": {**XTB_START, "convergence": {
                              "accurate_fraction": 0.9, "patience_generations": 2, "force_mae_target_eV_A": 0.025}},
                           "select": {"adaptive_trust_lo": True, "trust_hi_eV_A": 1.0, "hot_share": 0.4,
                                      "break_precursors": True},
                           **MACE_CAMPAIGN, "explore": {"dtype": "float32", "temperatures_K": [300, 700, 1200]}},
                          seeds=(0, 1, 2), al_labels=200),
                  # the rare set's high-energy frames include methyl/methylene C-H bonds at 1.29-1.45 Å
                  # (8 of 48), which the default bond filter (1.2 x covalent radii, 1.28 Å) calls
                  # broken, so no campaign ever labels such a frame: al-mace-hot-share's last
                  # committee errs 106 meV/Å on them, 53 on the other 40. bond_scale 1.5 (C-H 1.6 Å)
                  Variant("al-mace-stretch", "al-mace-hot-share with the bond filter at 1.5 x the covalent "
                          "radii (C-H broken past 1.6 Å instead of 1.28 Å): stretched bonds on the wall of "
                          "a dissociation are labelled, replicas restart from the reference past it",
                          mace_stretch(), seeds=(0, 1, 2), al_labels=200),
                  # the rare set's hot frames come from xTB MD at 1000 and 1500 K and are what keeps
                  # al-mace-stretch above target (55.8 meV/Å on them at 150 labels, random's 300
                  # MACE labels 49.5): its hottest replica explored at 1200 K, this one at 1500 K
                  Variant("al-mace-1500", "al-mace-stretch with its hottest replica at 1500 K instead of "
                          "1200 K (the rare set's hot frames are from MD at 1000 and 1500 K)",
                          mace_stretch(temperatures_K=[300, 700, 1500]), seeds=(0, 1, 2), al_labels=200),
                  # the last committees of al-mace-stretch call 81-90% of the rare set's hot frames
                  # accurate (below trust_lo) with errors 1.7-1.9x their disagreement: the replicas
                  # never go where the members part. UDD (issue 19's bias, [explore.udd] defaults)
                  # pushes every replica towards the members' energy spread, on top of that protocol
                  Variant("al-mace-udd", "al-mace-stretch with the UDD bias on every replica "
                          "(A 0.25 eV, B 5 meV)",
                          mace_stretch(bias="udd"), seeds=(0, 1, 2), al_labels=200),
                  # issue 19's other bias on the MACE protocol: well-tempered metadynamics on
                  # the two torsions ([explore.metad] defaults), every replica its own hills
                  Variant("al-mace-metad", "al-mace-stretch with torsion metadynamics on every replica "
                          "([explore.metad] defaults)",
                          mace_stretch(bias="metad"), seeds=(0, 1, 2), al_labels=300),
                  # al-mace-udd and al-mace-metad took 110 and 113 of their 122 exploration labels
                  # from the 1200 K replica and none from 300 K, where the metadynamics replica
                  # crossed both torsions' barriers: the picks after the precursors and the hot
                  # share split evenly over 300/700/1200 K ([select] stratify)
                  Variant("al-mace-metad-strata", "al-mace-metad with the picks after the precursors and "
                          "the hot share split evenly over the 300/700/1200 K replicas ([select] stratify = "
                          "\"temperature\")",
                          mace_stretch({"stratify": "temperature"}, bias="metad"), seeds=(0, 1, 2),
                          al_labels=300)),
        # dipole_weight: the example's until 2026-12-02 (0.1 since), kept so that every cached
        # campaign and random point was made, and resumes, with the same training
        overrides={"select": {"max_selected_per_generation": 25}, "loop": {"max_generations": 30},
                   "train": {"dipole_weight": 0.01}},
        # PaiNN with the BPNN's training settings (lr 3e-3, plateau patience 10) gave
        # 127 meV/Å at 100 random labels; 64 features and 3 interactions with lr 1e-3
        # overfitted more (validation loss 0.030 against 0.019) than 32 and 2, which gave
        # 86. float32: 1.8x faster to train than float64 here.
        architectures={"painn": {
            "committee": {"architecture": "painn", "cutoff_A": 5.0, "features": 32, "interactions": 2,
                          "radial_basis": 16, "dtype": "float32"},
            "train": {"learning_rate": 1e-3, "lr_plateau_patience_epochs": 25,
                      "early_stopping_patience_epochs": 100, "max_epochs": 600}},
            "mace": MACE_CAMPAIGN},
    ),
    "tiny": Preset(
        example="examples/water.toml",
        data=DataSpec("water-hf-sto3g-tiny", "H2O", {},
                      test=Sampling({300: 3, 600: 3}, interval_steps=10, equilibration_steps=20, seed=1),
                      pool=Sampling({300: 4, 600: 4}, interval_steps=10, equilibration_steps=20, seed=2)),
        sizes=(4, 8), seeds=(0,), al_labels=8, held_out=4,
        architectures={"painn": {"committee": {"architecture": "painn", "features": 8, "interactions": 1,
                                               "radial_basis": 6}, "train": {"learning_rate": 1e-2}}},
        # the 8-frame committees may drive water apart in 20 fs; the tiny run checks the
        # plumbing, so such frames are still selected (and labelled) rather than filtered
        overrides={"explore": {"steps": 40}, "train": {"max_epochs": 20},
                   "select": {"trust_lo_eV_A": 0.0, "trust_hi_eV_A": 1e6, "max_selected_per_generation": 4,
                              "allow_bond_changes": True, "min_distance_A": 0.1},
                   "loop": {"initial_samples": 4, "max_generations": 2},
                   "execution": {"max_workers": 1}},
    ),
}


# ------------------------------------------------------------------------------ config

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A nested dict of scalars, lists and tables as TOML text."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    text = (f"[{prefix}]\n" if prefix and scalars else "") + "".join(line + "\n" for line in scalars)
    for key, value in data.items():
        if isinstance(value, dict):
            text += "\n" + to_toml(value, f"{prefix}.{key}" if prefix else key)
    return text


def campaign_config(preset: Preset, seed: int, folder: Path, variant: Variant | None = None) -> Path:
    """The example campaign with the preset's and the variant's overrides, seeded,
    living in ``folder``, its label budget (``[loop] max_labels``) the variant's: the
    generation that reaches it picks only what is left (campaigns run before this was
    set ended up to 24 labels past it)."""
    variant = variant or preset.variants[0]
    data = tomllib.loads((ROOT / preset.example).read_text())
    for overrides in (preset.overrides, variant.overrides):
        for section, values in overrides.items():
            data.setdefault(section, {}).update(values)
    data.setdefault("loop", {})["max_labels"] = preset.budget_of(variant)
    data["campaign"] = {"name": f"{data['campaign']['name']}-{variant.name}-seed{seed}", "work_dir": str(folder)}
    data["train"]["seed"] = seed
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.toml"
    path.write_text(to_toml(data))
    return path


def with_reference(preset: Preset) -> Preset:
    """The preset whose data are labelled exactly at its example campaign's level."""
    from flows.backends import backend_options
    from flows.config import load_config

    reference = backend_options(load_config(ROOT / preset.example))
    return replace(preset, data=replace(preset.data, reference=reference))


# ---------------------------------------------------------------------------- training

class Results:
    """Per-point results in a JSON file, written after every point (resumable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    def get_or_compute(self, key: str, compute: Callable[[], dict]) -> dict:
        if key not in self.data:
            self._store(key, compute())
        return self.data[key]

    def amend(self, key: str, extra: Callable[[], dict], fields: tuple[str, ...]) -> dict:
        """Add ``extra()`` to an existing point unless it already holds ``fields``."""
        if not all(name in self.data[key] for name in fields):
            self._store(key, {**self.data[key], **extra()})
        return self.data[key]

    def _store(self, key: str, value: dict) -> None:
        # another run may have added or amended points meanwhile: the file wins for every
        # other key (this run's own points are in it already); replace it atomically
        on_disk = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data = {**self.data, **on_disk, key: value}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        partial.replace(self.path)


def train_and_test(preset: Preset, frames: list, test: list, seed: int, save_to: Path | None = None,
                   architecture: str | None = None, train_changes: dict[str, Any] | None = None) -> dict:
    """A committee trained from scratch on ``frames`` with the campaign's settings (and
    the committee of ``preset.architectures[architecture]``; ``train_changes`` on top of
    its ``[train]``), and its errors on ``test``; saved to ``save_to`` if given."""
    from flows.config import CommitteeSection, load_config
    from flows.steps.training import evaluation_metrics
    from nnp_core.training import train_committee

    config = load_config(ROOT / preset.example)
    train_overrides = dict(preset.overrides.get("train", {}))
    if architecture is not None:
        committee = CommitteeSection.model_validate(
            {**config.committee.model_dump(), **preset.architectures[architecture]["committee"]})
        config = config.model_copy(update={"committee": committee})
        train_overrides.update(preset.architectures[architecture].get("train", {}))
    committee_cfg = config.committee
    train_cfg = replace(config.train_config(), seed=seed, **{**train_overrides, **(train_changes or {})})
    committee, report = train_committee(frames, train_cfg, n_members=committee_cfg.members,
                                        architecture=committee_cfg.architecture,
                                        model_hparams=committee_cfg.network_hparams())
    if save_to is not None:
        committee.save(save_to)
    return {"n_labels": len(frames), "train_s": report.wall_s, **evaluation_metrics(committee, test)}


def random_curve(preset: Preset, pool: list, test: list, results: Results, log=print,
                 architecture: str | None = None) -> None:
    """Committees on random pool subsets; the largest of each seed is kept for
    ``bench.stability``."""
    prefix = f"{architecture}:" if architecture else ""
    for seed in preset.seeds:
        for n in preset.sizes:
            if n > len(pool):
                log(f"random: skipping N={n}, the pool has {len(pool)} labelled frames")
                continue
            keep = (preset.data.folder / "committees" / f"{prefix.replace(':', '-')}random-seed{seed}-n{n}"
                    if n == max(preset.sizes) else None)
            source = pool if preset.draw_from is None else pool[:max(n, preset.draw_from)]
            point = results.get_or_compute(f"{prefix}random/seed{seed}/n{n}", lambda: train_and_test(
                preset, take(source, n, seed), test, seed, keep, architecture))
            log(f"{prefix}random seed {seed} N={n}: force MAE {1000 * point['force_mae_eV_A']:.1f} meV/Å")


# --------------------------------------------------------------------- active learning

def run_campaign(config_path: Path, label_budget: int, log=print) -> None:
    """Run the ``active_learning`` flow one generation at a time until the campaign
    has ``label_budget`` labels, stops by itself, or its last 2 generations labelled
    nothing (its trust window emptied: without adaptive trust_lo it would explore on to
    its generation limit; the UDD campaign did at 184 labels) (needs a Prefect API)."""
    from flows.active_learning import active_learning
    from flows.campaign import open_campaign
    from flows.status import campaign_status
    from flows.steps.decide import stop_holds
    from flows.storage import reading

    if config_path.with_name("alflow.db").exists():  # a resumed campaign: upgrade an older schema first
        open_campaign(config_path).engine.dispose()
    while True:
        if config_path.with_name("alflow.db").exists():
            ctx = open_campaign(config_path, create=False)
            with reading(ctx.engine) as session:
                status = campaign_status(session, ctx.campaign_id)
            done = [g for g in status["generations"] if g["status"] == "done"]
            stalled = len(done) >= 3 and all(g["labels"] + g["failed"] == 0 for g in done[-2:])
            # a stop at a limit since raised (a campaign of 200 labels now budgeted 300) goes on
            finished = status["finished"] and stop_holds(status["stop_reason"], status["generations"][-1]["generation"],
                                                         ctx.config.loop, status["labels"])
            if status["labels"] >= label_budget or finished or stalled:
                log(f"{config_path.parent.name}: {status['labels']} labels, {len(status['generations'])} generations, "
                    f"{status['stop_reason'] or ('window empty' if stalled else 'budget spent')}")
                return
        summary = active_learning(config_path=str(config_path), max_new_generations=1)
        if summary.get("stop_reason"):  # stopped by a rule the status above does not know (a spent budget)
            log(f"{config_path.parent.name}: {summary['labels']} labels, {summary['stop_reason']}")
            return


def campaign_frames(config_path: Path) -> tuple[list, dict[int, Any]]:
    """All labelled frames of the campaign (by structure id) and the committee each
    generation's own train step made (retrains into it left out)."""
    from flows.campaign import open_campaign
    from flows.storage import labelled_atoms, reading
    from flows.storage.overview import own_committee_checkpoints
    from nnp_core.committee import load_committee

    ctx = open_campaign(config_path, create=False)
    with reading(ctx.engine) as session:
        frames = labelled_atoms(session, ctx.campaign_id)
        checkpoints = own_committee_checkpoints(session, ctx.campaign_id)
    return frames, {index: load_committee(ctx.resolve(path)) for index, path in checkpoints.items()}


def active_learning_curve(preset: Preset, test: list, results: Results, folder: Path, log=print,
                          architecture: str | None = None) -> None:
    """Campaigns (one per variant and seed) and their from-scratch and as-deployed test
    errors. With ``architecture`` the campaigns' labels are retrained with that committee
    instead (the campaigns, and their own committees, are the example's)."""
    from flows.steps.training import evaluation_metrics

    prefix = f"{architecture}:" if architecture else ""
    held_out = labelled_set(preset.data, "pool", limit=preset.held_out) if preset.held_out else None
    for variant in preset.variants:
        for seed in preset.seeds_of(variant):
            name = f"{variant.name}-seed{seed}"
            config_path = campaign_config(preset, seed, folder / name, variant)
            run_campaign(config_path, preset.budget_of(variant), log)
            frames, committees = campaign_frames(config_path)
            paid = {g: [a for a in frames if a.info.get("generation", 0) <= g] for g in committees}
            retrain = scratch_generations({g: len(mine) for g, mine in paid.items()}, preset.sizes)
            for generation, committee in sorted(committees.items()):
                mine = paid[generation]
                key = f"{variant.name}/seed{seed}/g{generation}"
                line = f"{prefix}{name} generation {generation} N={len(mine)}:"
                if not architecture:
                    deployed = results.get_or_compute(f"{key}/campaign", lambda: {
                        "n_labels": len(mine), **evaluation_metrics(committee, test),
                        **uncertainty_metrics(committee, test, COVERAGE_FACTOR, held_out)})
                    line += f" campaign committee force MAE {1000 * deployed['force_mae_eV_A']:.1f} meV/Å"
                    if generation - 1 in committees:
                        deployed = results.amend(f"{key}/campaign", lambda: fresh_coverage(
                            committees, frames, generation, test, calibration_generations(config_path)),
                            ("coverage_fresh",))
                if generation in retrain:
                    point = results.get_or_compute(prefix + key, lambda: train_and_test(
                        preset, mine, test, seed, architecture=architecture))
                    line += f" retrained from scratch {1000 * point['force_mae_eV_A']:.1f} meV/Å"
                log(line)


def existing_campaigns(preset: Preset):
    """(variant, seed, config path) of every campaign of ``preset`` that has run."""
    for variant in preset.variants:
        for seed in preset.seeds_of(variant):
            config_path = preset.data.folder / f"{variant.name}-seed{seed}" / "campaign.toml"
            if config_path.with_name("alflow.db").exists():
                yield variant, seed, config_path


def campaign_outcomes(preset: Preset, results: Results) -> None:
    """Record on each campaign's last generation point why it ended: ``stop_reason`` is
    the campaign's own (converged, generation limit) or "label budget" (its ``[loop]
    max_labels``, or the bench's stop for campaigns run before that was set)."""
    from flows.campaign import open_campaign
    from flows.status import campaign_status
    from flows.storage import reading

    for variant, seed, config_path in existing_campaigns(preset):
        ctx = open_campaign(config_path, create=False)
        with reading(ctx.engine) as session:
            status = campaign_status(session, ctx.campaign_id)
        last = max(row["generation"] for row in status["generations"])
        key = f"{variant.name}/seed{seed}/g{last}/campaign"
        if key in results.data:
            reason = status["stop_reason"] or "label budget"  # the bench's own stop, or [loop] max_labels
            results.amend(key, lambda: {"stop_reason": "label budget" if reason.startswith("label budget")
                                        else reason}, ("stop_reason",))


def subset_points(preset: Preset, results: Results, test: list, log=print) -> None:
    """Add per-test-subset force errors to every point whose committee is on disk: the
    kept random committees and the campaigns' own committees."""
    from nnp_core.committee import load_committee

    kept = re.compile(r"^(?:(\w+)-)?random-seed(\d+)-n(\d+)$")
    for path in sorted((preset.data.folder / "committees").glob("*random-seed*")):
        match = kept.match(path.name)
        key = match and f"{match.group(1) + ':' if match.group(1) else ''}random/seed{match.group(2)}/n{match.group(3)}"
        if key in results.data:
            results.amend(key, lambda: subset_errors(load_committee(path), test), (SUBSET_FIELD,))
    for variant, seed, config_path in existing_campaigns(preset):
        mine = re.compile(rf"^{variant.name}/seed{seed}/g\d+/campaign$")
        if all(SUBSET_FIELD in value for key, value in results.data.items() if mine.match(key)):
            continue
        _, committees = campaign_frames(config_path)
        for generation, committee in committees.items():
            key = f"{variant.name}/seed{seed}/g{generation}/campaign"
            if key in results.data:
                results.amend(key, lambda: subset_errors(committee, test), (SUBSET_FIELD,))
        log(f"{config_path.parent.name}: per-subset test errors of {len(committees)} committees")


def calibration_generations(config_path: Path) -> int:
    from flows.config import load_config

    return load_config(config_path).loop.calibration_generations


def fresh_coverage(committees: dict[int, Any], frames: list, generation: int, test: list,
                   n_generations: int) -> dict[str, float]:
    """Test coverage of generation ``generation``'s committee with the calibration the
    product fits now (``flows.steps.training.fresh_calibration``): the errors each
    earlier committee made on the next generation's fresh MD labels, pooled over the last
    ``n_generations`` generations. Computed here because the cached campaigns ran before
    the product stored those sums."""
    from flows.steps.training import calibration_sums, pooled_calibration

    sums = []
    for g in range(max(1, generation - n_generations + 1), generation + 1):
        fresh = [a for a in frames if a.info.get("generation") == g and a.info.get("source") == "md"]
        if fresh and g - 1 in committees:
            sums.append(calibration_sums(committees[g - 1], fresh))
    scale = pooled_calibration(sums).force_dev_scale
    prediction = committees[generation].predict(test)
    error = np.linalg.norm(prediction.forces_mean - np.concatenate([a.get_forces() for a in test]), axis=1)
    return {"calibration_scale_fresh": scale,
            "coverage_fresh": float(np.mean(error <= COVERAGE_FACTOR * scale * prediction.force_dev))}


def scratch_generations(labels: dict[int, int], sizes: tuple[int, ...]) -> set[int]:
    """Generations whose labels are retrained from scratch: for each random-curve size,
    the first generation with at least that many labels, and the last one (training
    from scratch at every generation would cost as much as the campaign itself)."""
    if not labels:
        return set()
    order = sorted(labels)
    return {order[-1]} | {next((g for g in order if labels[g] >= size), order[-1]) for size in sizes}


# -------------------------------------------------------------------------------- main

def subset_table(results: dict[str, dict], labels: dict[str, str]) -> list[str]:
    """Where on the test set the curves differ (empty before any committee was kept;
    its rows are random draws and campaign committees, never retrained curves)."""
    header, rows = subset_rows(results, labels)
    if not rows:
        return []
    return ["Force MAE (meV/Å) by test subset: the kept random committees and the campaigns' own "
            "committees at the generation nearest the same label count.", "",
            markdown_table(header, rows), ""]


def run(preset_name: str, *, folder: Path | None = None, write: bool = True, benchmarks_md: Path | None = None,
        log=print, skip: tuple[str, ...] = (), only: tuple[str, ...] = (), architecture: str | None = None,
        **changes: Any) -> str:
    """Build the data, both curves and the report; returns the markdown section.

    ``changes`` replace preset fields (``seeds``, ``sizes``, ``al_labels``); ``skip``
    may hold "random" and/or "al" to leave a curve as it is in the results file; ``only``
    names the active-learning variants to run (default: all); ``architecture`` (a key
    of the preset's ``architectures``) retrains both curves with that committee."""
    from flows.config import load_config

    preset = replace(with_reference(PRESETS[preset_name]), **changes)
    if folder is not None:
        preset = replace(preset, data=replace(preset.data, root=folder))
    data_dir = preset.data.folder

    def every_tenth(name: str) -> Callable[[int, int], None]:
        return lambda i, n: log(f"{name} labels {i}/{n}") if i % 10 == 0 or i == n else None

    test = labelled_set(preset.data, "test", progress=every_tenth("test"))
    results = Results(data_dir / "results.json")
    if "random" not in skip:
        pool = labelled_set(preset.data, "pool", limit=max(preset.sizes), progress=every_tenth("pool"))
        log(f"test set {len(test)} frames, random pool {len(pool)} frames ({data_dir})")
        random_curve(preset, pool, test, results, log, architecture)
    if "al" not in skip:
        run_variants = tuple(v for v in preset.variants if not only or v.name in only)
        if "seeds" in changes:  # an explicit --seeds runs those seeds of every variant run
            run_variants = tuple(replace(v, seeds=changes["seeds"]) for v in run_variants)
        active_learning_curve(replace(preset, variants=run_variants), test, results, data_dir, log, architecture)
    subset_points(preset, results, test, log)
    campaign_outcomes(preset, results)
    page = benchmarks_md or BENCHMARKS_MD
    plot_path = (page.parent / "img" / "learning_curve.png") if write else data_dir / "learning_curve.png"
    labels = {v.name: v.label for v in preset.variants}
    # the curves retrain every campaign's labels with the example's committee (or --architecture's)
    retrained = {} if architecture else retrained_with(preset.variants, load_config(ROOT / preset.example)
                                                       .committee.architecture)
    measured = {key.partition("/")[0] for key in results.data}  # variants with points yet
    plot_curves(results.data, plot_path)
    command = "`.venv/bin/python -m bench.data_efficiency" + ("" if preset_name == "full" else f" --preset {preset_name}")
    for name, value in changes.items():
        command += f" --{name.replace('_', '-')} " + (" ".join(map(str, value)) if isinstance(value, tuple) else str(value))
    command += f" --architecture {architecture}" if architecture else ""
    command += "`"
    text = "\n".join([
        f"## Data efficiency: active learning vs random sampling ({preset.data.molecule})", "", command, "",
        machine_line(), "",
        f"Reference level: {json.dumps(preset.data.reference)}. Test set: {len(test)} frames "
        f"(xTB MD at {sorted(preset.data.test.md_frames)} K, {preset.data.test.torsion_frames} torsion-scan "
        f"frames), relabelled at the reference level. Random pool: frames of xTB MD at "
        f"{sorted(preset.data.pool.md_frames)} K"
        + ("" if preset.draw_from is None else
           f"; random N frames are drawn (per seed) from its first max(N, {preset.draw_from}) frames")
        + f". Campaign settings: `{preset.example}` with {preset.overrides}. "
        f"Seeds {list(preset.seeds)}"
        + "".join(f" ({v.label}: seeds {list(preset.seeds_of(v))}, {preset.budget_of(v)} labels)"
                  for v in preset.variants if (v.seeds or v.al_labels) and v.name in measured)
        + "; mean ± std over seeds (a generation's mean over the seeds that reached it); force MAE per "
        "component.", "",
        markdown_table(["curve", "labels", "force MAE meV/Å", "force RMSE meV/Å", "energy MAE meV/atom", "seeds"],
                       curve_rows(results.data, labels, retrained)), "",
        *headline(results.data, preset, retrained), "",
        *subset_table(results.data, labels),
        f"![learning curve]({'img/learning_curve.png' if write else plot_path})",
    ])
    if write:
        write_section("data-efficiency", text, path=page)
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--no-write", action="store_true", help="print, don't touch docs/")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds (and those of "
                        "the active-learning variants run)")
    parser.add_argument("--sizes", type=int, nargs="+", help="override the random curve's label counts")
    parser.add_argument("--al-labels", type=int, help="override the campaigns' label budget")
    parser.add_argument("--skip", nargs="+", choices=("random", "al"), default=())
    parser.add_argument("--architecture", help="retrain the curves with this committee (a preset's "
                        "architectures key, e.g. painn) instead of the example's")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="run only these active-learning variants (the report still shows all)")
    args = parser.parse_args(argv)
    if args.sizes and min(args.sizes) < 2:
        parser.error(f"--sizes: a committee needs at least 2 frames (got {args.sizes})")
    known = [v.name for v in PRESETS[args.preset].variants]
    if args.variants and not set(args.variants) <= set(known):
        parser.error(f"--variants: unknown {sorted(set(args.variants) - set(known))}; {args.preset} has {known}")
    architectures = sorted(PRESETS[args.preset].architectures)
    if args.architecture is not None and args.architecture not in architectures:
        parser.error(f"--architecture: unknown {args.architecture!r}; {args.preset} has {architectures}")
    if args.al_labels is not None and args.al_labels < 1:
        parser.error(f"--al-labels must be >= 1 (got {args.al_labels})")
    changes = {name: tuple(value) if isinstance(value, list) else value
               for name, value in (("seeds", args.seeds), ("sizes", args.sizes), ("al_labels", args.al_labels))
               if value is not None}
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        text = run(args.preset, write=not args.no_write, skip=tuple(args.skip), only=tuple(args.variants or ()),
                   architecture=args.architecture, **changes)
    print(text)
    return text


if __name__ == "__main__":
    main()

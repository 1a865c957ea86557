"""Tables, headline figures and the plot for ``bench.data_efficiency``.

Results are a flat dict written by that script: ``random/seed{s}/n{N}`` (committees
trained on N random frames), ``<variant>/seed{s}/g{g}`` (trained from scratch on every
label campaign s of an active-learning variant such as ``al`` had after generation g)
and ``<variant>/seed{s}/g{g}/campaign`` (that campaign's own committee of generation g);
``<architecture>:`` in front of a key (e.g. ``painn:random/seed0/n100``) marks a point
retrained with another architecture than the example's. Each value holds ``n_labels``
and test-set metrics. Curves are keyed ``random``, ``<variant>``, ``<variant>/campaign``
and ``<architecture>:random``, ``<architecture>:<variant>``.
"""

from __future__ import annotations

import itertools

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

_KEY = re.compile(r"^((?:\w+:)?(?:random|al[\w-]*))/seed(\d+)/(n|g)(\d+)(/campaign)?$")
#: display names of architectures other than the example's (the key prefix otherwise)
ARCHITECTURE_NAMES = {"painn": "PaiNN"}
#: per-subset test force MAE of a point (``subset_errors``), where its committee was kept
SUBSET_FIELD = "force_mae_by_subset_eV_A"


def curve_label(kind: str, variants: dict[str, str] | None = None, retrained: dict[str, str] | None = None) -> str:
    """Legend/table name of a curve; ``variants`` maps variant names to their labels,
    ``retrained`` those whose campaigns ran another architecture than the one their
    labels were retrained with to that one's name (:func:`retrained_with`)."""
    architecture, _, kind = kind.rpartition(":")
    if architecture:
        name = ARCHITECTURE_NAMES.get(architecture, architecture)
        return f"{name}: {curve_label(kind, variants)}"
    if kind == "random":
        return "random sampling"
    name, _, campaign = kind.partition("/")
    label = (variants or {}).get(name, "active learning" if name == "al" else f"active learning ({name})")
    return f"{label} ({'campaign committee' if campaign else scratch_name(name, retrained)})"


def scratch_name(variant: str, retrained: dict[str, str] | None = None) -> str:
    """How a variant's retrained-from-scratch curve is named (with the architecture when
    it is not the campaign's own, e.g. a MACE campaign's labels retrained with the BPNN)."""
    other = (retrained or {}).get(variant)
    return f"retrained from scratch with the {other}" if other else "retrained from scratch"


def retrained_with(variants: Any, architecture: str) -> dict[str, str]:
    """Variant name -> display name of ``architecture`` (the committee the curves are
    retrained with) for the variants whose campaigns ran another one (their
    ``overrides["committee"]["architecture"]``)."""
    name = ARCHITECTURE_NAMES.get(architecture, architecture.upper())
    return {v.name: name for v in variants
            if v.overrides.get("committee", {}).get("architecture", architecture) != architecture}


def uncertainty_metrics(committee: Any, test: list, coverage_factor: float,
                        held_out: list | None = None) -> dict[str, float]:
    """Coverage of the nominal 95% per-atom force interval (|dF_i| <= k * sigma_i), raw
    (sigma = force_dev) and calibrated (sigma = scale * force_dev) with the committee's
    own scale; with ``held_out`` (labelled frames the committee never saw) also with a
    scale fitted on those frames."""
    from nnp_core.uncertainty import fit_calibration

    def errors(frames: list) -> tuple[np.ndarray, np.ndarray]:
        prediction = committee.predict(frames)
        f_ref = np.concatenate([a.get_forces() for a in frames])
        return prediction.forces_mean - f_ref, prediction.force_dev

    delta, dev = errors(test)
    error = np.linalg.norm(delta, axis=1)
    scale = committee.calibration.force_dev_scale
    out = {
        "calibration_scale": float(scale),
        "coverage_raw": float(np.mean(error <= coverage_factor * dev)),
        "coverage_calibrated": float(np.mean(error <= coverage_factor * scale * dev)),
    }
    if held_out:
        held_delta, held_dev = errors(held_out)
        fitted = fit_calibration(held_dev, held_delta).force_dev_scale
        out["calibration_scale_heldout"] = float(fitted)
        out["coverage_heldout"] = float(np.mean(error <= coverage_factor * fitted * dev))
    return out


def subset_errors(committee: Any, test: list) -> dict[str, dict[str, float]]:
    """Force MAE per test subset: the frames' ``key`` between the set name and the
    index (``test-md300-0001`` -> ``md300``)."""
    prediction = committee.predict(test)
    error = np.abs(prediction.forces_mean - np.concatenate([a.get_forces() for a in test]))
    bounds = np.cumsum([0] + [len(a) for a in test])
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for i, atoms in enumerate(test):
        parts[atoms.info["key"].split("-")[1]].append(error[bounds[i]:bounds[i + 1]])
    return {SUBSET_FIELD: {name: float(np.concatenate(chunks).mean()) for name, chunks in sorted(parts.items())}}


def subset_rows(results: dict[str, dict], variants: dict[str, str] | None = None) -> tuple[list[str], list[list]]:
    """Header and rows of force MAE (meV/Å) per test subset, mean over seeds: random
    committees where they were kept, and each campaign's own committees at the
    generation nearest (within 15%) each of those label counts."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for key, value in results.items():
        match = _KEY.match(key)
        if match and SUBSET_FIELD in value:
            groups[(match.group(1) + (match.group(5) or ""), int(match.group(4)))].append(value)
    if not groups:
        return [], []
    subsets = sorted({name for points in groups.values() for name in points[0][SUBSET_FIELD]})
    random_n = sorted({n for kind, n in groups if kind.endswith("random")})
    rows = []
    for target in random_n:
        for kind in sorted({k for k, _ in groups}, key=lambda k: (not k.endswith("random"), ":" in k, k)):
            near = [(abs(np.mean([p["n_labels"] for p in pts]) - target), pts)
                    for (k, _), pts in groups.items() if k == kind]
            gap, points = min(near, key=lambda item: item[0])
            if gap > 0.15 * target:
                continue
            rows.append([curve_label(kind, variants), f"{np.mean([p['n_labels'] for p in points]):.0f}", len(points)]
                        + [f"{1000 * np.mean([p[SUBSET_FIELD][s] for p in points]):.1f}" for s in subsets]
                        + [f"{1000 * np.mean([p['force_mae_eV_A'] for p in points]):.1f}"])
    return ["curve", "labels", "seeds", *(f"{s} force MAE" for s in subsets), "all"], rows


def curves(results: dict[str, dict]) -> dict[str, list[dict[str, float]]]:
    """Per curve, points sorted by labels: mean/std over seeds of labels and errors.
    Random points group by N, active-learning points by generation."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for key, value in results.items():
        match = _KEY.match(key)
        if match:
            kind = match.group(1) + (match.group(5) or "")
            groups[(kind, int(match.group(4)))].append(value)
    out: dict[str, list[dict[str, float]]] = defaultdict(list)
    for (kind, _), points in groups.items():
        def stat(name: str) -> tuple[float, float]:
            values = np.array([p[name] for p in points], dtype=float)
            return float(values.mean()), float(values.std())

        row = {"seeds": len(points)}
        for name in ("n_labels", "force_mae_eV_A", "force_rmse_eV_A", "energy_mae_eV_atom"):
            row[name], row[name + "_std"] = stat(name)
        for name in ("force_dev_spearman", "coverage_raw", "coverage_calibrated", "calibration_scale",
                     "coverage_heldout", "calibration_scale_heldout", "coverage_fresh",
                     "calibration_scale_fresh"):
            if all(p.get(name) is not None for p in points) and name in points[0]:
                row[name], row[name + "_std"] = stat(name)
        out[kind].append(row)
    return {kind: sorted(rows, key=lambda r: r["n_labels"]) for kind, rows in out.items()}


def curve_rows(results: dict[str, dict], variants: dict[str, str] | None = None,
               retrained: dict[str, str] | None = None) -> list[list[object]]:
    """Rows for the learning-curve table (milli-units, mean ± std over seeds)."""
    def pm(row: dict, name: str, scale: float = 1000.0) -> str:
        return f"{scale * row[name]:.1f} ± {scale * row[name + '_std']:.1f}"

    rows = []
    for kind, points in curves(results).items():
        for row in points:
            rows.append([curve_label(kind, variants, retrained), f"{row['n_labels']:.0f}", pm(row, "force_mae_eV_A"),
                         pm(row, "force_rmse_eV_A"), pm(row, "energy_mae_eV_atom"), row["seeds"]])
    return rows


def labels_to_reach(points: list[dict[str, float]], target: float) -> float | None:
    """Labels at which the curve first reaches ``target`` force MAE, interpolated
    log-log between the points around the crossing; None if it never does."""
    for before, after in zip([None] + points[:-1], points):
        if after["force_mae_eV_A"] <= target:
            if before is None:
                return after["n_labels"]
            x0, x1 = np.log(before["n_labels"]), np.log(after["n_labels"])
            y0, y1 = np.log(before["force_mae_eV_A"]), np.log(after["force_mae_eV_A"])
            return float(np.exp(x0 + (np.log(target) - y0) * (x1 - x0) / (y1 - y0)))
    return None


def headline(results: dict[str, dict], preset: Any, retrained: dict[str, str] | None = None) -> list[str]:
    """The figures the issue asks for, each with its target and verdict, per
    active-learning variant of ``preset`` (``retrained``: as :func:`curve_label`)."""
    data = curves(results)
    random = data.get("random", [])
    lines = []
    for variant in preset.variants:
        al, campaign = data.get(variant.name, []), data.get(variant.name + "/campaign", [])
        if not al:
            continue
        n_seeds = max(p["seeds"] for p in al)
        seeds = f"{n_seeds} seed{'s' if n_seeds > 1 else ''}"
        lines.append(f"- **{variant.label}** ({seeds}):")
        if random:
            best = random[-1]
            reach = labels_to_reach(al, best["force_mae_eV_A"])
            lines.append(
                f"  - Random sampling's {best['n_labels']:.0f}-label force MAE is "
                f"{1000 * best['force_mae_eV_A']:.1f} meV/Å; "
                f"active learning ({scratch_name(variant.name, retrained)}) "
                + (f"reaches it with **{reach:.0f} labels**" if reach is not None else
                   f"does **not reach it within {al[-1]['n_labels']:.0f} labels** "
                   f"(its best: {1000 * min(p['force_mae_eV_A'] for p in al):.1f} meV/Å)")
                + f" (target ≤ 150: {'met' if reach is not None and reach <= 150 else 'missed'}).")
            for point in random:
                target = point["force_mae_eV_A"]
                reach, deployed = labels_to_reach(al, target), labels_to_reach(campaign, target)
                lines.append(f"  - random {point['n_labels']:.0f} labels ({1000 * target:.1f} meV/Å): AL needs "
                             + (f"{reach:.0f}" if reach is not None else "more than it had")
                             + f" {scratch_name(variant.name, retrained)}, "
                             + (f"{deployed:.0f}" if deployed is not None else "more than it had")
                             + " with the campaign's own committee")
        lines += (_best_within(f"{variant.label} ({scratch_name(variant.name, retrained)})", al)
                  + _best_within(f"{variant.label} (its campaign's own committee)", campaign)
                  + _outcome_lines(results, variant.name))
        # the last generation every seed reached (later ones may hold a single seed)
        last = max(campaign, key=lambda p: (p["seeds"], p["n_labels"])) if campaign else {}
        if "coverage_raw" in last:
            lines.append(
                f"  - Uncertainty, final campaign committees ({last['n_labels']:.0f} labels): Spearman(max_force_dev, "
                f"true max force error) on the test set {last['force_dev_spearman']:.2f} ± "
                f"{last['force_dev_spearman_std']:.2f} (target ≥ 0.5: "
                f"{'met' if last['force_dev_spearman'] >= 0.5 else 'missed'}); coverage of the nominal 95% "
                f"per-atom force interval: raw {100 * last['coverage_raw']:.0f}%, calibrated "
                f"{100 * last['coverage_calibrated']:.0f}% with the committees' own scale "
                f"({last['calibration_scale']:.2f}; fitted by each campaign as it ran: on its validation frames "
                "before `loop.calibration_generations` existed, on fresh labels since)"
                + (f", calibrated on {preset.held_out} held-out pool frames {100 * last['coverage_heldout']:.0f}% "
                   f"(scale {last['calibration_scale_heldout']:.2f})" if "coverage_heldout" in last else "")
                + ".")
        fresh = [p for p in campaign if "coverage_fresh" in p]
        if fresh:
            low, high = min(p["coverage_fresh"] for p in fresh), max(p["coverage_fresh"] for p in fresh)
            lines.append(
                f"  - With the product's calibration on fresh labels (the last 3 generations' errors of the "
                f"committees that explored them): coverage {100 * last.get('coverage_fresh', float('nan')):.0f}% "
                f"(scale {last.get('calibration_scale_fresh', float('nan')):.2f}) for the final committees; "
                f"the per-generation mean over seeds lies in {100 * low:.0f}-{100 * high:.0f}% from generation 1 on.")
    return lines + _best_within("random sampling", random, indent="") + _architecture_lines(results, preset)


def _architecture_lines(results: dict[str, dict], preset: Any) -> list[str]:
    """Other architectures against the example's on the very same labels (same seeds
    and points), mean over the seeds both have."""
    labels = {v.name: v.label for v in preset.variants}
    paired: dict[str, dict[str, dict[int, list[tuple[dict, dict]]]]] = defaultdict(lambda: defaultdict(dict))
    for key, value in results.items():
        architecture, _, own_key = key.partition(":")
        match = _KEY.match(own_key) if own_key else None
        if match and not match.group(5) and own_key in results:
            kind = match.group(1)
            paired[architecture][kind].setdefault(round(value["n_labels"]), []).append((value, results[own_key]))
    lines = []
    for architecture, kinds in sorted(paired.items()):
        lines.append(f"- **{ARCHITECTURE_NAMES.get(architecture, architecture)}** against the example's committee, "
                     "both trained from scratch on the same labels (force MAE meV/Å, theirs vs the example's, "
                     "mean over the seeds both have):")
        for kind in sorted(kinds, key=lambda k: (k != "random", k)):
            points = sorted(kinds[kind].items())
            lines.append(f"  - {curve_label(kind, labels)}: " + ", ".join(
                f"{n} labels {1000 * np.mean([a['force_mae_eV_A'] for a, _ in pts]):.1f} vs "
                f"{1000 * np.mean([b['force_mae_eV_A'] for _, b in pts]):.1f}"
                + f" ({len(pts)} seed{'s' if len(pts) > 1 else ''})" for n, pts in points))
    return lines


def _outcome_lines(results: dict[str, dict], variant: str) -> list[str]:
    """How each campaign of ``variant`` ended (``stop_reason`` on its last point)."""
    ended = []
    for key, value in results.items():
        match = _KEY.match(key)
        if match and match.group(1) == variant and match.group(5) and "stop_reason" in value:
            reason = value["stop_reason"].split(":")[0]
            ended.append((int(match.group(2)), f"seed {match.group(2)} {reason} at {value['n_labels']:.0f} labels "
                                               f"(generation {match.group(4)})"))
    return [f"  - Campaigns ended: {'; '.join(text for _, text in sorted(ended))}."] if ended else []


def _best_within(name: str, points: list[dict], indent: str = "  ") -> list[str]:
    within = [p for p in points if p["n_labels"] <= 300]
    if not within:
        return []
    best = min(within, key=lambda p: p["force_mae_eV_A"])
    return [f"{indent}- Best {name} force MAE with ≤ 300 labels: {1000 * best['force_mae_eV_A']:.1f} meV/Å "
            f"at {best['n_labels']:.0f} labels (target ≤ 25: {'met' if best['force_mae_eV_A'] <= 0.025 else 'missed'})."]


def plot_curves(results: dict[str, dict], path: Path) -> Path:
    """Force MAE vs labels, log-log, mean ± std over seeds. The legend names each curve by
    its variant's short name (the tables carry the long labels), one
    colour per sampling, solid for retrained from scratch, dashed for the campaign's own
    committee, dotted squares for another architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted(curves(results).items(), key=lambda item: (":" in item[0], item[0]))
    fig, ax = plt.subplots(figsize=(10, 6.5))
    colours: dict[str, object] = {"random": "black"}
    palette = itertools.cycle(plt.get_cmap("tab20").colors)  # more curves than colours repeat
    for kind, points in kinds:
        base = kind.rpartition(":")[2].partition("/")[0]
        colour = colours.setdefault(base, next(palette))
        x = np.array([p["n_labels"] for p in points])
        y = 1000 * np.array([p["force_mae_eV_A"] for p in points])
        dy = 1000 * np.array([p["force_mae_eV_A_std"] for p in points])
        other = ":" in kind  # another architecture than the example's
        ax.errorbar(x, y, yerr=dy, marker="s" if other else "o", mfc="none" if other else None, capsize=3,
                    color=colour, ms=4, lw=1.2, label=curve_label(kind, {base: base}),
                    ls=":" if other else "--" if kind.endswith("/campaign") else "-")
    ax.axhline(25, color="grey", ls="--", lw=1, label="target 25 meV/Å")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xticks([t for t in (10, 25, 50, 100, 200, 400, 800) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]])
    ax.set_yticks([t for t in (10, 20, 50, 100, 200, 500) if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]])
    ax.set_xlabel("reference labels")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_title("solid: retrained from scratch on the labels; dashed: the campaign's own committee", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


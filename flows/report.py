"""``alflow report`` and the dashboard's figures: the learning curve against the target,
the explored frames' ``max_force_dev`` against the trust window, uncertainty against
true error on every fresh label, and, for a molecule with a rotatable bond, where the
exploration went in torsion space and which frames were labelled (with metadynamics'
free-energy estimate when the campaign explores with it).

The ``*_png`` functions draw from plain data (``flows.status`` queries them) and
return PNG bytes: ``write_report`` saves them beside ``report.md``, the dashboard embeds
the same bytes in its summary artifact (``flows.dashboard``).
"""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flows.status import (  # noqa: E402
    campaign_status,
    explored_deviations,
    fresh_frame_errors,
    label_origin_rows,
    learning_points,
)
from flows.storage import StructureSource, labelled_atoms  # noqa: E402
from flows.storage.records import reading  # noqa: E402
from nnp_core.committee import load_committee  # noqa: E402

if TYPE_CHECKING:
    from flows.campaign import CampaignContext

FIGURES = ("learning_curve.png", "force_dev_histogram.png", "uncertainty_vs_error.png")
#: the torsion-space map, drawn for molecules with a rotatable bond
MAP = "exploration_map.png"


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def learning_curve_png(points: dict[str, list[tuple[int, float]]], target_eV_A: float) -> bytes:
    """Force MAE (meV/Å) against training labels: fresh labels (the committee's error on
    the next generation's frames, before it saw them), validation set, and the target."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for label_set, style, name in (("fresh", "s-", "fresh labels (test, before training)"),
                                   ("validation", "o--", "validation set")):
        if points.get(label_set):
            x, y = zip(*points[label_set])
            ax.plot(x, np.array(y) * 1000, style, ms=4, label=name)
    ax.axhline(target_eV_A * 1000, color="k", lw=0.8, ls=":", label=f"target {target_eV_A * 1000:g} meV/Å")
    ax.set_xlabel("training labels")
    ax.set_ylabel("force MAE (meV/Å)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Force error against labels")
    return _png(fig)


def force_dev_histogram_png(deviations: dict[int, list[float]], trust_lo: float, trust_hi: float) -> bytes:
    """One step histogram per generation of the explored frames' ``max_force_dev``
    (log bins), with the trust window shaded: frames left of it were trusted, frames in
    it were candidates for labelling, frames right of it were beyond trust."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    values = [v for vs in deviations.values() for v in vs if v > 0]
    low = min([trust_lo / 3, *values]) if values else trust_lo / 3
    high = max([trust_hi * 3, *values]) if values else trust_hi * 3
    bins = np.geomspace(max(low, 1e-4), high, 40)
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(deviations))))
    for colour, (index, devs) in zip(colours, deviations.items()):
        ax.hist(np.clip(devs, bins[0], bins[-1]), bins=bins, histtype="step", color=colour,
                label=f"generation {index} ({len(devs)})")
    ax.axvspan(trust_lo, trust_hi, color="tab:orange", alpha=0.15, label="trust window (labelled)")
    ax.set_xscale("log")
    ax.set_xlabel("max_force_dev of explored frames (eV/Å)")
    ax.set_ylabel("frames")
    if deviations:
        ax.legend(fontsize=7, ncol=1 if len(deviations) < 7 else 2)
    else:
        ax.text(0.5, 0.5, "no exploration yet", ha="center", transform=ax.transAxes)
    ax.set_title("Committee disagreement where it explored")
    return _png(fig)


def uncertainty_vs_error_png(fresh: dict[int, dict[str, list[float]]]) -> bytes:
    """Every fresh label: the exploring committee's calibrated ``max_force_dev`` against
    its true largest per-atom force error, per generation; the diagonal is perfect
    calibration."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(fresh))))
    all_values = []
    for colour, (index, frames) in zip(colours, fresh.items()):
        x = np.array(frames.get("calibrated_max_force_dev_eV_A") or frames["max_force_dev_eV_A"])
        y = np.array(frames["max_force_error_eV_A"])
        all_values += [*x, *y]
        ax.loglog(x, y, "o", ms=3.5, color=colour, label=f"generation {index}")
    if all_values:
        positive = [v for v in all_values if v > 0]
        lo, hi = min(positive) / 1.5, max(positive) * 1.5
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.5)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no fresh labels yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("calibrated max_force_dev (eV/Å)")
    ax.set_ylabel("true max force error (eV/Å)")
    ax.set_title("Uncertainty against error, fresh labels")
    return _png(fig)


#: kJ/mol per eV
KJ_MOL = 96.485


def exploration_map_png(points: dict[str, np.ndarray], names: list[str],
                        free_energy: tuple[np.ndarray, np.ndarray, float] | None = None) -> bytes:
    """Where the campaign went in torsion space (``flows.status.exploration_torsions``):
    the explored frames coloured by their replica's temperature, the labelled frames on
    top; with two or more torsions the first two span the plane, with one it is a
    histogram per temperature. ``free_energy`` (grid (G, D) in degrees, F in eV on it,
    the replica's temperature): metadynamics' estimate of the free energy along the
    torsions, drawn as contours (kJ/mol; one torsion: a curve) when D ≤ 2."""
    angles, labelled = points["torsions_deg"], points["labelled"]
    temperatures = points["temperature_K"]
    explored = np.isfinite(temperatures) & ~labelled
    fig, ax = plt.subplots(figsize=(5.2, 5.6))
    levels = sorted({float(t) for t in temperatures[explored]})
    colours = dict(zip(levels, plt.cm.plasma(np.linspace(0.05, 0.8, max(1, len(levels))))))
    if angles.shape[1] >= 2:
        for t in levels:
            mask = explored & (temperatures == t)
            ax.plot(angles[mask, 0], angles[mask, 1], ".", ms=1.5, alpha=0.35, color=colours[t],
                    label=f"explored at {t:g} K ({int(mask.sum())})")
        ax.plot(angles[labelled, 0], angles[labelled, 1], "o", ms=4, mfc="none", mec="k", mew=0.8,
                label=f"labelled ({int(labelled.sum())})")
        if free_energy is not None and free_energy[0].shape[1] == 2:
            grid, energy, temperature = free_energy
            n = int(round(math.sqrt(len(grid))))
            relative = (energy - energy.min()) * KJ_MOL
            contours = ax.contour(grid[:, 0].reshape(n, n), grid[:, 1].reshape(n, n), relative.reshape(n, n),
                                  levels=np.arange(5.0, max(10.0, float(relative.max())), 5.0),
                                  colors="0.35", linewidths=0.6)
            ax.clabel(contours, fontsize=6, fmt="%g")
            ax.plot([], [], "-", color="0.35", lw=0.6, label=f"metadynamics free energy at {temperature:g} K "
                                                               "(kJ/mol)")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xlabel(f"{names[0]} (°)")
        ax.set_ylabel(f"{names[1]} (°)")
    else:
        bins = np.linspace(-180, 180, 37)
        for t in levels:
            mask = explored & (temperatures == t)
            ax.hist(angles[mask, 0], bins=bins, histtype="step", color=colours[t],
                    label=f"explored at {t:g} K ({int(mask.sum())})")
        ax.plot(angles[labelled, 0], np.zeros(int(labelled.sum())), "|", ms=12, color="k",
                label=f"labelled ({int(labelled.sum())})")
        ax.set_xlim(-180, 180)
        ax.set_xlabel(f"{names[0]} (°)")
        ax.set_ylabel("frames")
        if free_energy is not None and free_energy[0].shape[1] == 1:
            grid, energy, temperature = free_energy
            twin = ax.twinx()
            twin.plot(grid[:, 0], (energy - energy.min()) * KJ_MOL, "-", color="0.35", lw=1.0)
            twin.set_ylabel(f"metadynamics free energy at {temperature:g} K (kJ/mol)")
    if not len(angles):
        ax.text(0.5, 0.5, "no exploration yet", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, markerscale=3,
                  frameon=False)
    ax.set_title("Where exploration went, and what was labelled")
    return _png(fig)


def exploration_map(ctx: CampaignContext) -> bytes | None:
    """The campaign's ``exploration_map_png`` over its metadynamics torsions, or its
    rotatable bonds' (None for a molecule without one), with metadynamics' free energy
    of its coldest replica when it explores with ``bias = "metad"``."""
    from flows.status import exploration_torsions
    from flows.storage.records import replica_hills

    config = ctx.config
    try:
        cvs = config.torsion_cvs()
    except ValueError:  # no rotatable bond and no torsions given: nothing to map
        return None
    temperatures = list(config.explore.temperatures_K)
    with reading(ctx.engine) as session:
        points = exploration_torsions(session, ctx.campaign_id, cvs.torsions.numpy())
        hills = replica_hills(session, ctx.campaign_id, len(temperatures)) if config.explore.bias == "metad" else []
    return exploration_map_png(points, list(cvs.names), metad_free_energy(config, hills))


def metad_free_energy(config, hills: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Metadynamics' free energy (grid in degrees (G, D), F in eV, temperature) from the
    coldest replica's stored ``hills`` (``flows.storage.records.replica_hills``), for one
    or two torsions; None without hills, with more torsions, or with hills that do not fit
    the config's torsions (the campaign file changed them since: no map of a wrong bias)."""
    temperatures = list(config.explore.temperatures_K)
    coldest = int(np.argmin(temperatures)) if temperatures else 0
    if config.explore.bias != "metad" or coldest >= len(hills) or hills[coldest] is None:
        return None
    bias = config.exploration_bias()
    values = np.asarray(hills[coldest], dtype=np.float64)
    if bias.n_cvs > 2 or values.size % (bias.n_cvs + 1):
        return None
    bias.set_hills(coldest, values.reshape(-1, bias.n_cvs + 1))
    grid = bias.grid(72 if bias.n_cvs == 2 else 360)
    return np.degrees(grid), bias.free_energy(grid, coldest), float(temperatures[coldest])


def campaign_figures(ctx: CampaignContext) -> dict[str, bytes]:
    """The campaign's figures (file name -> PNG bytes): the three of ``FIGURES`` and, for
    a molecule with a rotatable bond, ``exploration_map.png``."""
    select_cfg = ctx.config.select
    with reading(ctx.engine) as session:
        points = learning_points(session, ctx.campaign_id)
        deviations = explored_deviations(session, ctx.campaign_id)
        fresh = fresh_frame_errors(session, ctx.campaign_id)
    figures = {
        "learning_curve.png": learning_curve_png(points, ctx.config.loop.convergence.force_mae_target_eV_A),
        "force_dev_histogram.png": force_dev_histogram_png(deviations, select_cfg.trust_lo_eV_A,
                                                           select_cfg.trust_hi_eV_A),
        "uncertainty_vs_error.png": uncertainty_vs_error_png(fresh),
    }
    torsion_map = exploration_map(ctx)
    if torsion_map is not None:
        figures[MAP] = torsion_map
    return figures


def _parity_png(committee_path: str, frames) -> bytes:
    committee = load_committee(committee_path)
    prediction = committee.predict(frames)
    reference = np.concatenate([a.get_forces() for a in frames])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(reference.ravel(), prediction.forces_mean.ravel(), ".", ms=2)
    lim = float(np.abs(reference).max()) * 1.05
    ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
    ax.set_xlabel("reference force (eV/Å)")
    ax.set_ylabel("committee force (eV/Å)")
    ax.set_title("Parity, validation set")
    return _png(fig)


def write_report(ctx: CampaignContext, out_dir: Path | None = None,
                 figures: dict[str, bytes] | None = None) -> Path:
    """Write the figures (``campaign_figures``, or ``figures`` if already drawn), the
    latest committee's parity plot on the validation set and ``report.md``."""
    out_dir = Path(out_dir or ctx.work_dir / "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = campaign_figures(ctx) if figures is None else figures
    with reading(ctx.engine) as session:
        status = campaign_status(session, ctx.campaign_id, ctx.work_dir)
        origins = label_origin_rows(session, ctx.campaign_id)
        validation = labelled_atoms(session, ctx.campaign_id, sources=[StructureSource.VALIDATION])
    for name, png in figures.items():
        (out_dir / name).write_bytes(png)
    lines = [f"# alflow campaign `{ctx.name}`", "",
             f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
             f"Labels: {status['labels']} done, {status['failed_labels']} failed, "
             f"{status['pending_labels']} pending. Latest committee: `{status['latest_committee']}`.", ""]
    if status["stop_reason"]:
        lines += [f"Stopped: {status['stop_reason']}", ""]
    lines += [markdown_table(status["generations"]), "",
              "Finished labels by where their frame came from (exploration: the replica's temperature):", "",
              markdown_table(origins) if origins else "(no finished labels yet)", "",
              "![force error against labels](learning_curve.png)",
              "![max_force_dev against the trust window](force_dev_histogram.png)",
              "![uncertainty against error](uncertainty_vs_error.png)"]
    if MAP in figures:
        lines += [f"![where exploration went in torsion space, and what was labelled]({MAP})"]
    if status["latest_committee"] and len(validation) >= 2:
        (out_dir / "parity.png").write_bytes(_parity_png(status["latest_committee"], validation))
        lines += ["![parity](parity.png)"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no generations yet)"
    headers = list(rows[0])
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join("" if r[h] is None else str(r[h]) for h in headers) + " |" for r in rows]
    return "\n".join(out)

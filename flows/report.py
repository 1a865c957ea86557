"""``alflow report``: PNG plots and a markdown summary of a campaign."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from flows.campaign import CampaignContext  # noqa: E402
from flows.status import campaign_status  # noqa: E402
from flows.storage import Committee, Evaluation, StructureSource, labelled_atoms  # noqa: E402
from nnp_core.committee import load_committee  # noqa: E402


def _learning_curve(session: Session, campaign_id: int, path: Path) -> None:
    rows = session.execute(select(Committee, Evaluation).join(Evaluation, Evaluation.committee_id == Committee.id)
                           .where(Committee.campaign_id == campaign_id).order_by(Committee.id)).all()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label_set, marker in (("validation", "o-"), ("fresh", "s--")):
        points = [((c.training_metrics or {}).get("n_frames", 0), e.force_mae_eV_A)
                  for c, e in rows if e.label_set == label_set]
        if points:
            x, y = zip(*points)
            ax.plot(x, np.array(y) * 1000, marker, label=f"{label_set} labels")
    ax.set_xlabel("training labels")
    ax.set_ylabel("force MAE (meV/Å)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Force error vs labels")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parity_and_uncertainty(committee_path: str, frames, parity: Path, uncertainty: Path) -> dict:
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
    fig.tight_layout()
    fig.savefig(parity, dpi=120)
    plt.close(fig)
    errors = np.linalg.norm(prediction.forces_mean - reference, axis=1)
    max_error = np.array([errors[s].max() for s in prediction.frame_slices()])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.loglog(prediction.calibrated_max_force_dev, max_error, "o", ms=3)
    ax.set_xlabel("calibrated max_force_dev (eV/Å)")
    ax.set_ylabel("true max force error (eV/Å)")
    ax.set_title("Uncertainty vs error")
    fig.tight_layout()
    fig.savefig(uncertainty, dpi=120)
    plt.close(fig)
    return {"force_mae_eV_A": float(np.abs(prediction.forces_mean - reference).mean())}


def write_report(ctx: CampaignContext, out_dir: Path | None = None) -> Path:
    """Write ``learning_curve.png``, ``parity.png``, ``uncertainty.png`` and ``report.md``."""
    out_dir = Path(out_dir or ctx.work_dir / "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    with Session(ctx.engine) as session:
        status = campaign_status(session, ctx.campaign_id)
        _learning_curve(session, ctx.campaign_id, out_dir / "learning_curve.png")
        validation = labelled_atoms(session, ctx.campaign_id, sources=[StructureSource.VALIDATION])
    lines = [f"# alflow campaign `{ctx.name}`", "",
             f"Labels: {status['labels']} done, {status['failed_labels']} failed, "
             f"{status['pending_labels']} pending. Latest committee: `{status['latest_committee']}`.", ""]
    if status["stop_reason"]:
        lines += [f"Stopped: {status['stop_reason']}", ""]
    lines += [markdown_table(status["generations"]), "", "![force error vs labels](learning_curve.png)"]
    if status["latest_committee"] and len(validation) >= 2:
        _parity_and_uncertainty(status["latest_committee"], validation, out_dir / "parity.png",
                                out_dir / "uncertainty.png")
        lines += ["![parity](parity.png)", "![uncertainty vs error](uncertainty.png)"]
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

"""Decide after each generation whether the campaign has converged."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.campaign import CampaignContext, get_or_create_generation, mark_step_done
from flows.storage import Generation, GenerationStatus


def accurate_fraction(selection_counts: dict[str, int]) -> float | None:
    """Share of this generation's explored frames the committee already trusted."""
    total = sum(selection_counts.values())
    return None if total == 0 else selection_counts.get("accurate", 0) / total


def pooled_fresh_mae(fresh_metrics: list[dict | None]) -> tuple[float | None, int]:
    """Force MAE over every fresh label of several generations (each generation's MAE
    weighted by its frames: one molecule, so by its force components) and the number of
    labels; (None, 0) without any."""
    pairs = [(m["n_frames"], m["force_mae_eV_A"]) for m in fresh_metrics if m and m.get("n_frames")]
    n = sum(count for count, _ in pairs)
    return (sum(count * mae for count, mae in pairs) / n if n else None), n


def decide(ctx: CampaignContext, generation_index: int) -> tuple[bool, str | None]:
    """Stop when the accurate fraction stayed above the threshold for ``patience``
    generations and the force MAE on the fresh labels of those generations, pooled, is
    under target, or at the limit. Pooling keeps a generation that labelled a single
    frame (its window nearly empty) from deciding on that frame alone.

    Returns (stop, reason) and records both on the generation (marked done).
    """
    start = time.perf_counter()
    rule = ctx.config.loop.convergence
    with Session(ctx.engine) as session, session.begin():
        generation = get_or_create_generation(session, ctx.campaign_id, generation_index)
        rows = session.scalars(select(Generation).where(
            Generation.campaign_id == ctx.campaign_id, Generation.index >= 1,
            Generation.index <= generation_index).order_by(Generation.index)).all()
        fractions = [accurate_fraction((g.metrics or {}).get("selection") or {}) for g in rows]
        recent = fractions[-rule.patience_generations:]
        window = rows[-rule.patience_generations:]
        fresh, n_fresh = pooled_fresh_mae([(g.metrics or {}).get("fresh") for g in window])
        stable = len(recent) >= rule.patience_generations and all(
            f is not None and f >= rule.accurate_fraction for f in recent)
        accurate_enough = fresh is not None and fresh <= rule.force_mae_target_eV_A
        reason = None
        if stable and accurate_enough:
            reason = (f"converged: accurate fraction >= {rule.accurate_fraction} for "
                      f"{rule.patience_generations} generation(s) and fresh force MAE {fresh:.4f} <= "
                      f"{rule.force_mae_target_eV_A} eV/Å (over their {n_fresh} fresh labels)")
        elif generation_index >= ctx.config.loop.max_generations:
            reason = f"generation limit {ctx.config.loop.max_generations} reached"
        generation.converged = reason is not None and reason.startswith("converged")
        generation.stop_reason = reason
        generation.status = GenerationStatus.DONE
        generation.finished_at = datetime.now(timezone.utc)
        mark_step_done(session, generation, "decide", time.perf_counter() - start,
                       accurate_fraction=fractions[-1] if fractions else None)
    return reason is not None, reason

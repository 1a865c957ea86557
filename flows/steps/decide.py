"""Decide after each generation whether the campaign has converged."""

from __future__ import annotations

import time

from flows import storage
from flows.pipeline import finishing


def pooled_fresh_mae(fresh: list[tuple[int, float]]) -> tuple[float | None, int]:
    """Force MAE over every fresh label of several generations (each generation's MAE
    weighted by its frames: one molecule, so by its force components) and the number of
    labels, from (n_frames, force MAE) pairs; (None, 0) without any."""
    pairs = [(n, mae) for n, mae in fresh if n]
    n = sum(count for count, _ in pairs)
    return (sum(count * mae for count, mae in pairs) / n if n else None), n


def budget_left(session, ctx) -> int | None:
    """Labels the campaign may still ask for under ``[loop] max_labels`` (None: no budget)."""
    budget = ctx.config.loop.max_labels
    return None if budget is None else max(budget - storage.count_labels(session, ctx.campaign_id), 0)


def stop_holds(reason: str, generation_index: int, loop, n_labels: int) -> bool:
    """Whether a recorded stop still holds under the *current* ``[loop]`` settings: a
    stop at the generation limit or at the label budget is lifted once neither limit is
    reached any more (``max_generations`` raised, ``max_labels`` raised or removed);
    any other stop (converged) holds."""
    if not reason.startswith(("generation limit", "label budget")):
        return True
    return generation_index >= loop.max_generations or (loop.max_labels is not None and n_labels >= loop.max_labels)


def decide(ctx, generation_index: int) -> tuple[bool, str | None]:
    """Stop when the accurate fraction stayed above the threshold for ``patience``
    generations and the force MAE on the fresh labels of those generations, pooled, is
    under target, or at a limit: the label budget (``[loop] max_labels``, every label
    asked for counted), then the generation limit. Pooling keeps a generation that labelled a single
    frame (its window nearly empty) from deciding on that frame alone.

    Returns (stop, reason) and records both on the generation (marked done).
    """
    start = time.perf_counter()
    rule = ctx.config.loop.convergence
    with finishing(ctx, generation_index, "decide", start) as (session, generation):
        rows = storage.generations(session, ctx.campaign_id, first=1, last=generation_index)
        fractions = [g.accurate_fraction for g in rows]
        recent = fractions[-rule.patience_generations:]
        window = rows[-rule.patience_generations:]
        evaluations = storage.fresh_evaluations(session, ctx.campaign_id, window[0].index if window else 1,
                                                generation_index)
        fresh, n_fresh = pooled_fresh_mae([(e.n_frames, e.force_mae_eV_A) for e in evaluations.values()])
        stable = len(recent) >= rule.patience_generations and all(
            f is not None and f >= rule.accurate_fraction for f in recent)
        accurate_enough = fresh is not None and fresh <= rule.force_mae_target_eV_A
        reason = None
        if stable and accurate_enough:
            reason = (f"converged: accurate fraction >= {rule.accurate_fraction} for "
                      f"{rule.patience_generations} generation(s) and fresh force MAE {fresh:.4f} <= "
                      f"{rule.force_mae_target_eV_A} eV/Å (over their {n_fresh} fresh labels)")
        elif (left := budget_left(session, ctx)) is not None and left == 0:
            reason = (f"label budget {ctx.config.loop.max_labels} reached "
                      f"({storage.count_labels(session, ctx.campaign_id)} labels)")
        elif generation_index >= ctx.config.loop.max_generations:
            reason = f"generation limit {ctx.config.loop.max_generations} reached"
        storage.finish_generation(session, generation, reason,
                                  converged=reason is not None and reason.startswith("converged"))
    return reason is not None, reason

"""The generation pipeline: the order of a generation's steps and every step mark.

A generation is a fixed sequence of steps (:data:`GENERATION_0`, :data:`GENERATION`).
Each step writes its outputs and its mark in one transaction (:func:`finishing`), so a
killed run resumes at the first step without a mark and nothing finished is redone.
Labelling is the exception by design: it always runs, because it is a queue that a
resumed run drains (claimed labels of a dead worker go back to pending first).

:func:`run_generation` runs the steps through a table of callables, one per step name,
taking the generation index: the Prefect tasks of ``flows.tasks`` in the product, the
plain functions of :func:`plain_steps` in benchmarks and tests. Nothing else decides the
order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flows import storage
from flows.progress import step_started
from flows.storage import Generation, Session

#: generation 0: sample the reference geometry and initial frames, label, train, decide
GENERATION_0 = ("sample", "label", "train", "decide")
#: every later generation
GENERATION = ("explore", "select", "label", "evaluate_fresh", "train", "decide")
STEPS = tuple(dict.fromkeys(GENERATION_0 + GENERATION))
#: steps that run again on resume even when marked (they are idempotent queues)
ALWAYS = frozenset({"label"})

StepTable = Mapping[str, Callable[[int], Any]]


def steps_of(index: int) -> tuple[str, ...]:
    return GENERATION_0 if index == 0 else GENERATION


@contextmanager
def finishing(ctx: Any, index: int, step: str, started: float) -> Iterator[tuple[Session, Generation]]:
    """The transaction in which ``step`` of generation ``index`` writes its outputs; its
    mark (with the seconds since ``started``, a ``time.perf_counter()``) is written in
    the same transaction on leaving."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps are {STEPS}")
    with storage.transaction(ctx.engine) as session:
        row = storage.generation(session, ctx.campaign_id, index)
        yield session, row
        storage.mark_step(session, row, step, time.perf_counter() - started)


def done_steps(ctx: Any, index: int) -> dict[str, float]:
    """The finished steps of generation ``index`` and their seconds."""
    with storage.transaction(ctx.engine) as session:
        return storage.done_steps(session, storage.generation(session, ctx.campaign_id, index).id)


def run_generation(ctx: Any, index: int, steps: StepTable) -> Any:
    """Run generation ``index``'s steps in order, skipping those already marked (except
    :data:`ALWAYS`); returns what the last step (``decide``) returned, or None when the
    generation was already decided."""
    done = done_steps(ctx, index)
    result = None
    for name in steps_of(index):
        if name in done and name not in ALWAYS:
            continue
        if name == "decide" and "decide" in done:
            return None
        step_started(ctx.name, index, name)  # the live display (flows.progress sinks)
        result = steps[name](index)
    return result


def plain_steps(ctx: Any) -> dict[str, Callable[[int], Any]]:
    """The step table without Prefect: each step's library function, in this process
    (benchmarks of the loop's own cost, tests)."""
    from flows.steps.decide import decide
    from flows.steps.exploration import explore
    from flows.steps.initial import sample_initial
    from flows.steps.labelling import label_generation
    from flows.steps.selection import select_candidates
    from flows.steps.training import evaluate_fresh, train_generation

    return {"sample": lambda index: sample_initial(ctx),
            "explore": lambda index: explore(ctx, index),
            "select": lambda index: select_candidates(ctx, index),
            "label": lambda index: label_generation(ctx, index),
            "evaluate_fresh": lambda index: evaluate_fresh(ctx, index),
            "train": lambda index: train_generation(ctx, index),
            "decide": lambda index: decide(ctx, index)}

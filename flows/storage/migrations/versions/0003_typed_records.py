"""Typed records instead of JSON: step marks, exploration/selection/label counts,
fresh-label errors, calibration and retrains as tables and columns.

Before this revision a generation kept what its steps found in one JSON column
(``generations.metrics``: "steps", "explore", "selection", "labels_done", "fresh", ...)
and a committee kept its calibration and retrain record in ``committees.training_metrics``.
The upgrade moves every value into its column or table, then drops the JSON, so a
campaign database made before it resumes with its history intact
(tests/flows/test_migrations.py upgrades a database made by revision 0002's code).
The downgrade restores the schema of 0002, with the step marks and counts written back
into ``generations.metrics`` (enough for 0002's code to resume).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DECISIONS = ("accurate", "candidate", "rejected", "filtered", "duplicate", "selected")
TIMED = ("explore", "select", "label", "train", "evaluate")  # 0002's per-step seconds columns


def _json(value: Any) -> Any:
    if value is None or isinstance(value, (dict, list)):
        return value
    return json.loads(value)


def _when(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text)


def upgrade() -> None:
    op.create_table(
        "step_marks",
        sa.Column("generation_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["generation_id"], ["generations.id"],
                                name=op.f("fk_step_marks_generation_id_generations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("generation_id", "step", name=op.f("pk_step_marks")),
    )
    op.create_table(
        "replica_runs",
        sa.Column("generation_id", sa.Integer(), nullable=False),
        sa.Column("replica", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("stop", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["generation_id"], ["generations.id"],
                                name=op.f("fk_replica_runs_generation_id_generations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("generation_id", "replica", name=op.f("pk_replica_runs")),
    )
    op.create_table(
        "retrains",
        sa.Column("committee_id", sa.Integer(), nullable=False),
        sa.Column("generation_id", sa.Integer(), nullable=True),
        sa.Column("new_labels", sa.Integer(), nullable=False),
        sa.Column("previous_committee_id", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["committee_id"], ["committees.id"],
                                name=op.f("fk_retrains_committee_id_committees"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["generation_id"], ["generations.id"],
                                name=op.f("fk_retrains_generation_id_generations"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["previous_committee_id"], ["committees.id"],
                                name=op.f("fk_retrains_previous_committee_id_committees"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("committee_id", name=op.f("pk_retrains")),
    )
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("new_committee_pending", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("generations") as batch:
        for name in ("replica_steps", "md_trusted", "md_rejected", "md_failed",
                     *(f"n_{d}" for d in DECISIONS), "labels_done", "labels_failed"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.add_column(sa.Column("replica_steps_per_s", sa.Double(), nullable=True))
    with op.batch_alter_table("committees") as batch:
        batch.add_column(sa.Column("n_training_frames", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("training_wall_s", sa.Double(), nullable=True))
        batch.add_column(sa.Column("force_dev_scale", sa.Double(), nullable=False, server_default="1.0"))
        batch.add_column(sa.Column("energy_dev_scale", sa.Double(), nullable=False, server_default="1.0"))
        batch.add_column(sa.Column("calibrated_on", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("member_reports", sa.JSON(), nullable=True))
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("max_force_error_eV_A", sa.Double(), nullable=True))
        # judged once, by the select step: exploration stores its scores undecided
        batch.alter_column("decision", existing_type=sa.String(length=32), nullable=True)
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("generation_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sum_sq_force_error", sa.Double(), nullable=True))
        batch.add_column(sa.Column("sum_sq_force_dev", sa.Double(), nullable=True))
        batch.create_foreign_key(op.f("fk_evaluations_generation_id_generations"), "generations",
                                 ["generation_id"], ["id"], ondelete="SET NULL")

    _move_json_into_records(op.get_bind())

    with op.batch_alter_table("generations") as batch:
        batch.drop_column("metrics")
        for step in TIMED:
            batch.drop_column(f"{step}_s")
    with op.batch_alter_table("committees") as batch:
        batch.drop_column("training_metrics")


def _move_json_into_records(bind: sa.Connection) -> None:
    meta = sa.MetaData()
    meta.reflect(bind)
    t = meta.tables
    campaigns, generations, committees = t["campaigns"], t["generations"], t["committees"]
    evaluations, scores, structures, labels = t["evaluations"], t["scores"], t["structures"], t["labels"]

    for campaign_id, config in bind.execute(sa.select(campaigns.c.id, campaigns.c.config)).all():
        config = _json(config) or {}
        if "new_committee_pending" in config:
            pending = bool(config.pop("new_committee_pending"))
            bind.execute(campaigns.update().where(campaigns.c.id == campaign_id)
                         .values(config=config, new_committee_pending=pending))

    for committee_id, generation_id, metrics in bind.execute(sa.select(
            committees.c.id, committees.c.generation_id, committees.c.training_metrics)).all():
        metrics = _json(metrics) or {}
        calibration = metrics.get("calibration") or {}
        bind.execute(committees.update().where(committees.c.id == committee_id).values(
            n_training_frames=int(metrics.get("n_frames") or 0), training_wall_s=metrics.get("wall_s"),
            force_dev_scale=float(calibration.get("force_dev_scale", 1.0)),
            energy_dev_scale=float(calibration.get("energy_dev_scale", 1.0)),
            calibrated_on=metrics.get("calibrated_on"), member_reports=metrics.get("members")))
        bind.execute(evaluations.update().where(evaluations.c.committee_id == committee_id,
                                                evaluations.c.label_set == "validation")
                     .values(generation_id=generation_id))
        if record := metrics.get("retrain"):
            generation = bind.scalar(sa.select(generations.c.id).where(
                generations.c.campaign_id == sa.select(committees.c.campaign_id)
                .where(committees.c.id == committee_id).scalar_subquery(),
                generations.c.index == record.get("generation")))
            bind.execute(t["retrains"].insert().values(
                committee_id=committee_id, generation_id=generation, new_labels=int(record.get("new_labels") or 0),
                previous_committee_id=record.get("previous_committee"),
                started_at=_when(record.get("started")) or _when(record.get("finished")),
                finished_at=_when(record.get("finished"))))

    for row in bind.execute(sa.select(generations)).mappings().all():
        metrics = _json(row["metrics"]) or {}
        gid = row["id"]
        for step, seconds in (metrics.get("steps") or {}).items():
            bind.execute(t["step_marks"].insert().values(
                generation_id=gid, step=step, seconds=float(seconds),
                finished_at=row["finished_at"] or row["started_at"] or datetime.now().astimezone()))
        values: dict[str, Any] = {}
        explore = metrics.get("explore") or {}
        if explore:
            frames = explore.get("md_frames") or {}
            values.update(replica_steps=explore.get("replica_steps"),
                          replica_steps_per_s=explore.get("replica_steps_per_s"),
                          md_trusted=frames.get("trusted", 0), md_rejected=frames.get("rejected", 0),
                          md_failed=frames.get("failed", 0))
            for replica in explore.get("replicas") or []:
                bind.execute(t["replica_runs"].insert().values(
                    generation_id=gid, replica=replica["replica"], steps=replica["steps"],
                    restarts=replica.get("restarts", 0), stop=replica["stop"]))
        if (selection := metrics.get("selection")) is not None:
            values.update({f"n_{d}": int(selection.get(d, 0)) for d in DECISIONS})
        if "labels_done" in metrics:
            values.update(labels_done=metrics["labels_done"], labels_failed=metrics.get("labels_failed", 0))
        if values:
            bind.execute(generations.update().where(generations.c.id == gid).values(**values))
        if fresh := metrics.get("fresh"):
            _move_fresh(bind, t, row["campaign_id"], gid, fresh)


def _move_fresh(bind: sa.Connection, t: dict[str, sa.Table], campaign_id: int, generation_id: int,
                fresh: dict[str, Any]) -> None:
    """The fresh-label evaluation of ``generation_id``: its Evaluation row (the one of the
    campaign's "fresh" rows with these figures) gets the generation and the calibration
    sums; each labelled frame's Score by that committee gets its true force error."""
    evaluations, committees = t["evaluations"], t["committees"]
    candidates = bind.execute(sa.select(evaluations.c.id, evaluations.c.committee_id).join(
        committees, committees.c.id == evaluations.c.committee_id).where(
        committees.c.campaign_id == campaign_id, evaluations.c.label_set == "fresh",
        evaluations.c.generation_id.is_(None), evaluations.c.n_frames == fresh.get("n_frames"),
        evaluations.c.force_mae_eV_A == fresh.get("force_mae_eV_A")).order_by(evaluations.c.id)).all()
    if not candidates:
        return
    evaluation_id, committee_id = candidates[0]
    bind.execute(evaluations.update().where(evaluations.c.id == evaluation_id).values(
        generation_id=generation_id, sum_sq_force_error=fresh.get("sum_sq_force_error"),
        sum_sq_force_dev=fresh.get("sum_sq_force_dev")))
    errors = ((fresh.get("frames") or {}).get("max_force_error_eV_A")) or []
    structures, labels, scores = t["structures"], t["labels"], t["scores"]
    # the frames evaluate_fresh scored: this generation's MD frames with a done label, by id
    ids = bind.scalars(sa.select(structures.c.id).join(labels, labels.c.structure_id == structures.c.id).where(
        structures.c.generation_id == generation_id, structures.c.source == "md",
        labels.c.status == "done").order_by(structures.c.id)).all()
    if len(ids) == len(errors):
        for structure_id, error in zip(ids, errors):
            bind.execute(scores.update().where(scores.c.structure_id == structure_id,
                                               scores.c.committee_id == committee_id)
                         .values(max_force_error_eV_A=error))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("metrics", sa.JSON(), nullable=True))
        for step in TIMED:
            batch.add_column(sa.Column(f"{step}_s", sa.Double(), nullable=True))
    with op.batch_alter_table("committees") as batch:
        batch.add_column(sa.Column("training_metrics", sa.JSON(), nullable=True))
    bind = op.get_bind()
    meta = sa.MetaData()
    meta.reflect(bind)
    t = meta.tables
    generations, marks, committees = t["generations"], t["step_marks"], t["committees"]
    for row in bind.execute(sa.select(generations)).mappings().all():
        steps = {step: seconds for step, seconds in bind.execute(sa.select(marks.c.step, marks.c.seconds).where(
            marks.c.generation_id == row["id"])).all()}
        metrics: dict[str, Any] = {"steps": steps}
        if row["n_accurate"] is not None:
            metrics["selection"] = {d: row[f"n_{d}"] for d in DECISIONS}
        if row["labels_done"] is not None:
            metrics.update(labels_done=row["labels_done"], labels_failed=row["labels_failed"])
        bind.execute(generations.update().where(generations.c.id == row["id"]).values(
            metrics=metrics, **{f"{step}_s": steps.get(step) for step in TIMED}))
    for row in bind.execute(sa.select(committees)).mappings().all():
        bind.execute(committees.update().where(committees.c.id == row["id"]).values(training_metrics={
            "n_frames": row["n_training_frames"], "wall_s": row["training_wall_s"],
            "members": row["member_reports"] or [], "calibrated_on": row["calibrated_on"],
            "calibration": {"force_dev_scale": row["force_dev_scale"], "energy_dev_scale": row["energy_dev_scale"]}}))
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_constraint(op.f("fk_evaluations_generation_id_generations"), type_="foreignkey")
        for name in ("generation_id", "sum_sq_force_error", "sum_sq_force_dev"):
            batch.drop_column(name)
    op.execute("UPDATE scores SET decision = 'candidate' WHERE decision IS NULL")
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("max_force_error_eV_A")
        batch.alter_column("decision", existing_type=sa.String(length=32), nullable=False)
    with op.batch_alter_table("committees") as batch:
        for name in ("n_training_frames", "training_wall_s", "force_dev_scale", "energy_dev_scale",
                     "calibrated_on", "member_reports"):
            batch.drop_column(name)
    with op.batch_alter_table("generations") as batch:
        for name in ("replica_steps", "replica_steps_per_s", "md_trusted", "md_rejected", "md_failed",
                     *(f"n_{d}" for d in DECISIONS), "labels_done", "labels_failed"):
            batch.drop_column(name)
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("new_committee_pending")
    op.drop_table("retrains")
    op.drop_table("replica_runs")
    op.drop_table("step_marks")

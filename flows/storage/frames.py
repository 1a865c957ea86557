"""Frames in and out of the database: ``ase.Atoms`` <-> ``structures`` (+ ``labels``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.storage.models import Decision, Generation, LabelRow, LabelStatus, Score, Structure, StructureSource
from nnp_core.structures import frame_hash

T = TypeVar("T", int, float)

#: rows per ``IN (...)`` lookup, well under every database's parameter limit
_CHUNK = 500


def add_structures(
    session: Session,
    campaign_id: int,
    atoms_list: Iterable[Atoms],
    *,
    source: StructureSource,
    generation_id: int | None = None,
    sampler: str | None = None,
    replica: int | Sequence[int | None] | None = None,
    temperature_K: float | Sequence[float | None] | None = None,
    md_step: int | Sequence[int | None] | None = None,
    parent_id: int | Sequence[int | None] | None = None,
    bias_energy_eV: float | Sequence[float | None] | None = None,
    bias_cvs: Sequence[np.ndarray | None] | None = None,
) -> list[int]:
    """Store frames once per campaign; return one structure id per input frame.

    A frame whose content hash (``nnp_core.structures.frame_hash``) is already in the
    campaign, or earlier in ``atoms_list``, is not stored again: its existing id is
    returned. ``replica``, ``temperature_K``, ``md_step``, ``parent_id`` and
    ``bias_energy_eV`` take one value for all frames or a sequence with one per frame;
    ``bias_cvs`` one CV vector (or None) per frame. New rows are flushed.

    Raises ``ValueError`` for non-finite positions or a sequence of the wrong length.
    """
    frames = list(atoms_list)
    n = len(frames)
    per_frame = {
        "replica": _per_frame(replica, n, "replica"),
        "temperature_K": _per_frame(temperature_K, n, "temperature_K"),
        "md_step": _per_frame(md_step, n, "md_step"),
        "parent_id": _per_frame(parent_id, n, "parent_id"),
        "bias_energy_eV": _per_frame(bias_energy_eV, n, "bias_energy_eV"),
        "bias_cvs": [None] * n if bias_cvs is None else _per_frame(list(bias_cvs), n, "bias_cvs"),
    }
    hashes = [frame_hash(atoms) for atoms in frames]
    id_by_hash = _ids_by_hash(session, campaign_id, set(hashes))
    new_rows: dict[str, Structure] = {}
    for i, (atoms, content_hash) in enumerate(zip(frames, hashes, strict=True)):
        if content_hash in id_by_hash or content_hash in new_rows:
            continue
        new_rows[content_hash] = Structure(
            campaign_id=campaign_id,
            generation_id=generation_id,
            source=source,
            sampler=sampler,
            content_hash=content_hash,
            **_arrays_of(atoms),
            **{name: values[i] for name, values in per_frame.items()},
        )
    session.add_all(new_rows.values())
    session.flush()
    id_by_hash.update({content_hash: row.id for content_hash, row in new_rows.items()})
    return [id_by_hash[content_hash] for content_hash in hashes]


def _arrays_of(atoms: Atoms) -> dict[str, Any]:
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise ValueError("a frame with non-finite positions cannot be stored")
    return {
        "n_atoms": len(atoms),
        "numbers": atoms.numbers,
        "positions": positions,
        "cell": atoms.cell.array,
        "pbc": atoms.pbc,
        "momenta": atoms.get_momenta() if atoms.has("momenta") else None,
    }


def _per_frame(value: T | Sequence[T | None] | None, n: int, name: str) -> list[T | None]:
    """One plain Python value (numpy scalars converted) per frame."""
    if value is None or isinstance(value, int | float | np.generic):
        values = [value] * n
    else:
        values = list(value)
    if len(values) != n:
        raise ValueError(f"{name}: got {len(values)} values for {n} frames")
    return [v.item() if isinstance(v, np.generic) else v for v in values]  # type: ignore[misc]


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _ids_by_hash(session: Session, campaign_id: int, hashes: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(hashes)):
        rows = session.execute(
            select(Structure.content_hash, Structure.id).where(
                Structure.campaign_id == campaign_id, Structure.content_hash.in_(chunk)
            )
        )
        found.update({content_hash: structure_id for content_hash, structure_id in rows})
    return found


def provenance(structure: Structure, generation_index: int | None = None) -> dict[str, Any]:
    """Where a frame came from, as ``atoms.info`` keys (``None`` values left out)."""
    info = {
        "structure_id": structure.id,
        "source": StructureSource(structure.source).value,
        "generation_id": structure.generation_id,
        "generation": generation_index,
        "sampler": structure.sampler,
        "replica": structure.replica,
        "temperature_K": structure.temperature_K,
        "md_step": structure.md_step,
        "parent_id": structure.parent_id,
        "content_hash": structure.content_hash,
        "bias_energy_eV": structure.bias_energy_eV,
        "bias_cvs": structure.bias_cvs,
    }
    return {key: value for key, value in info.items() if value is not None}


def atoms_from_structure(
    structure: Structure, label: LabelRow | None = None, *, generation_index: int | None = None
) -> Atoms:
    """The frame as ``ase.Atoms``, bit-exact, with its provenance in ``atoms.info``.

    With a ``done`` label, the reference energy (eV), forces (eV/Å) and dipole (e·Å)
    are attached as a ``SinglePointCalculator``; other labels attach nothing.
    Raises ``ValueError`` if ``label`` belongs to another structure.
    """
    atoms = Atoms(
        numbers=structure.numbers,
        positions=structure.positions,
        cell=structure.cell,
        pbc=structure.pbc,
    )
    if structure.momenta is not None:
        atoms.set_momenta(structure.momenta)
    atoms.info.update(provenance(structure, generation_index))
    if label is None:
        return atoms
    if label.structure_id != structure.id:
        raise ValueError(
            f"label {label.id} is of structure {label.structure_id}, not {structure.id}"
        )
    if label.status == LabelStatus.DONE:
        results: dict[str, Any] = {"energy": label.energy_eV, "forces": label.forces_eV_A}
        if label.dipole_eA is not None:
            results["dipole"] = label.dipole_eA
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["label_id"] = label.id
    return atoms


def labelled_atoms(
    session: Session,
    campaign_id: int,
    *,
    sources: Collection[StructureSource] | None = None,
    generation_ids: Collection[int] | None = None,
    structure_ids: Collection[int] | None = None,
) -> list[Atoms]:
    """The campaign's frames with a ``done`` label, by structure id, each with its
    reference results attached (see :func:`atoms_from_structure`).

    ``sources``, ``generation_ids`` and ``structure_ids`` narrow the selection.
    """
    statement = (
        select(Structure, LabelRow, Generation.index)
        .join(LabelRow, LabelRow.structure_id == Structure.id)
        .outerjoin(Generation, Structure.generation_id == Generation.id)
        .where(Structure.campaign_id == campaign_id, LabelRow.status == LabelStatus.DONE)
        .order_by(Structure.id)
    )
    if sources is not None:
        statement = statement.where(Structure.source.in_(list(sources)))
    if generation_ids is not None:
        statement = statement.where(Structure.generation_id.in_(list(generation_ids)))
    if structure_ids is not None:
        statement = statement.where(Structure.id.in_(list(structure_ids)))
    return [
        atoms_from_structure(structure, label, generation_index=index)
        for structure, label, index in session.execute(statement)
    ]


def reference_structure(session: Session, campaign_id: int) -> Atoms:
    """The campaign's reference geometry (stored by generation 0's sample step)."""
    row = session.scalars(select(Structure).where(
        Structure.campaign_id == campaign_id, Structure.sampler == "reference-geometry")).first()
    if row is None:
        raise LookupError("campaign has no reference geometry: generation 0 was not sampled")
    return atoms_from_structure(row)


def last_md_frames(session: Session, campaign_id: int, n_replicas: int) -> list[Atoms | None]:
    """Each replica's newest stored (trusted) MD frame, with its momenta: where the
    replica goes on next generation (None: no frame yet, start from the reference).
    The explore step resets a replica whose newest frame came apart
    (``flows.steps.exploration.explore``)."""
    points: list[Atoms | None] = [None] * n_replicas
    for replica in range(n_replicas):
        row = session.scalars(select(Structure).where(
            Structure.campaign_id == campaign_id, Structure.source == StructureSource.MD,
            Structure.replica == replica).order_by(Structure.id.desc()).limit(1)).first()
        points[replica] = None if row is None else atoms_from_structure(row)
    return points


def add_score(session: Session, structure_id: int, committee_id: int, *, energy_mean_eV: float,
              energy_dev: float, max_force_dev: float, decision: Decision | None,
              reason: str | None = None, dipole_dev: float | None = None) -> None:
    """A committee's scores of one frame; ``decision`` None until selection judges it;
    ``dipole_dev`` (e·Å) for a committee with a dipole head (NaN is stored as NULL)."""
    if dipole_dev is not None and not math.isfinite(dipole_dev):
        dipole_dev = None
    session.add(Score(structure_id=structure_id, committee_id=committee_id, energy_mean_eV=energy_mean_eV,
                      energy_dev=energy_dev, max_force_dev=max_force_dev, decision=decision, reason=reason,
                      dipole_dev=dipole_dev))


def scored_frames(session: Session, generation_id: int, committee_id: int) -> list[tuple[Structure, Score]]:
    """A generation's trusted MD frames with the scores ``committee_id`` gave them, by id."""
    return [tuple(row) for row in session.execute(
        select(Structure, Score).join(Score, Score.structure_id == Structure.id).where(
            Structure.generation_id == generation_id, Structure.source == StructureSource.MD,
            Score.committee_id == committee_id).order_by(Structure.id)).all()]


def labelled_structures(session: Session, campaign_id: int) -> list[Structure]:
    """Every frame of the campaign that has a label (in any state), by id."""
    return list(session.scalars(select(Structure).join(LabelRow, LabelRow.structure_id == Structure.id)
                                .where(Structure.campaign_id == campaign_id).order_by(Structure.id)))


def count_structures(session: Session, generation_id: int, source: StructureSource) -> int:
    return session.scalar(select(func.count()).select_from(Structure).where(
        Structure.generation_id == generation_id, Structure.source == source)) or 0


#: ``Structure.sampler`` of frames that ``alflow md --feed-back`` (``flows.production``)
#: stores as candidates of the next generation
PRODUCTION_SAMPLER = "production-md"


def stored_hashes(session: Session, campaign_id: int, hashes: Collection[str]) -> set[str]:
    """Those of ``hashes`` (``nnp_core.structures.frame_hash``) the campaign already stores."""
    return set(_ids_by_hash(session, campaign_id, set(hashes)))


def frames_without_score(session: Session, generation_id: int, committee_id: int, *,
                         sampler: str) -> list[Structure]:
    """A generation's MD frames from ``sampler`` that ``committee_id`` has not scored, by
    id (production frames fed back before the latest committee was trained)."""
    scored = select(Score.structure_id).where(Score.committee_id == committee_id)
    return list(session.scalars(select(Structure).where(
        Structure.generation_id == generation_id, Structure.source == StructureSource.MD,
        Structure.sampler == sampler, Structure.id.not_in(scored)).order_by(Structure.id)))

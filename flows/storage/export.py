"""Reading the record out: pandas tables for reports, extended XYZ and ASE databases."""

from __future__ import annotations

import enum
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import ase.db
import ase.io
import numpy as np
import pandas as pd
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from flows.storage.backup import replacing
from flows.storage.frames import labelled_atoms
from flows.storage.models import Base, CommitteeRow, Structure, StructureSource
from flows.storage.types import NumpyArray

#: tables without a campaign_id column: (column, the table it points to) to reach one
_CAMPAIGN_VIA: dict[str, tuple[str, type[Base]]] = {
    "labels": ("structure_id", Structure),
    "scores": ("structure_id", Structure),
    "evaluations": ("committee_id", CommitteeRow),
}


def _table(table: str | type[Base]) -> Table:
    if isinstance(table, str):
        tables = Base.metadata.tables
        if table not in tables:
            raise ValueError(f"no table {table!r}; tables are {sorted(tables)}")
        return tables[table]
    return table.__table__  # type: ignore[return-value]


def to_dataframe(
    session: Session,
    table: str | type[Base],
    campaign_id: int | None = None,
    *,
    arrays: Literal["decode", "omit"] = "decode",
) -> pd.DataFrame:
    """One table (by name or ORM class) as a DataFrame, one row per row, by id.

    With ``campaign_id``, only that campaign's rows. Enum columns are plain strings,
    times are UTC. Array columns (positions, forces, ...) hold numpy arrays with
    ``arrays="decode"`` or are left out with ``arrays="omit"``.
    Raises ``ValueError`` for an unknown table name.
    """
    sql_table = _table(table)
    columns = [
        column
        for column in sql_table.columns
        if arrays == "decode" or not isinstance(column.type, NumpyArray)
    ]
    statement = select(*columns).order_by(sql_table.c.id)
    if campaign_id is not None:
        statement = statement.where(_campaign_filter(sql_table, campaign_id))
    rows = [[_plain(value) for value in row] for row in session.execute(statement)]
    return pd.DataFrame(rows, columns=[column.name for column in columns])


def _campaign_filter(sql_table: Table, campaign_id: int) -> Any:
    if sql_table.name == "campaigns":
        return sql_table.c.id == campaign_id
    if "campaign_id" in sql_table.c:
        return sql_table.c.campaign_id == campaign_id
    column, parent = _CAMPAIGN_VIA[sql_table.name]
    parent_table = _table(parent)
    parent_ids = select(parent_table.c.id).where(parent_table.c.campaign_id == campaign_id)
    return sql_table.c[column].in_(parent_ids)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def export_extxyz(
    session: Session,
    campaign_id: int,
    path: str | Path,
    *,
    sources: Collection[StructureSource] | None = None,
    generation_ids: Collection[int] | None = None,
    overwrite: bool = True,
    protected: Collection[Path] = (),
) -> int:
    """Write the campaign's labelled frames to an extended XYZ file; return how many.

    Energy (eV) and forces (eV/Å) are calculator results, provenance (structure_id,
    source, generation, ...) is in each frame's info line. The file is written in full
    to a temporary file beside it and then renamed onto ``path`` (``replacing``): an
    existing file is replaced only when complete, or refused (``OutputError``) without
    ``overwrite``; ``protected`` paths are never written.
    """
    frames = labelled_atoms(session, campaign_id, sources=sources, generation_ids=generation_ids)
    with replacing(path, overwrite=overwrite, protected=protected, suffix=".extxyz") as temporary:
        if frames:
            ase.io.write(temporary, frames, format="extxyz")
    return len(frames)


def export_ase_db(
    session: Session,
    campaign_id: int,
    path: str | Path,
    *,
    sources: Collection[StructureSource] | None = None,
    generation_ids: Collection[int] | None = None,
    overwrite: bool = True,
    protected: Collection[Path] = (),
) -> int:
    """Write the campaign's labelled frames to a new ASE database (SQLite); return how many.

    Energy and forces are stored as calculator results, provenance as key-value pairs.
    Written to a temporary file beside ``path`` and renamed onto it when complete, as
    :func:`export_extxyz` (``overwrite``, ``protected``).
    """
    frames = labelled_atoms(session, campaign_id, sources=sources, generation_ids=generation_ids)
    with replacing(path, overwrite=overwrite, protected=protected, suffix=".db") as temporary:
        with ase.db.connect(temporary, type="db", append=False) as database:
            for atoms in frames:
                key_value_pairs = {
                    key: value
                    for key, value in atoms.info.items()
                    if isinstance(value, str | bool | int | float | np.integer | np.floating)
                }
                database.write(atoms, key_value_pairs=key_value_pairs)
    return len(frames)


def export_csv(
    session: Session,
    table: str | type[Base],
    campaign_id: int | None,
    path: str | Path,
    *,
    overwrite: bool = True,
    protected: Collection[Path] = (),
) -> int:
    """Write one table (``to_dataframe``, array columns left out) as CSV; return the rows.
    Written to a temporary file and renamed onto ``path``, as :func:`export_extxyz`."""
    frame = to_dataframe(session, table, campaign_id, arrays="omit")
    with replacing(path, overwrite=overwrite, protected=protected, suffix=".csv") as temporary:
        frame.to_csv(temporary, index=False)
    return len(frame)

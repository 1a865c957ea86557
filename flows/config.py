"""Campaign configuration: one TOML file, validated strictly (a typo is an error).

``load_config(path)`` reads the file, resolves relative paths against its folder and
returns a frozen :class:`CampaignConfig`, or raises :class:`ConfigError` naming the file,
the dotted path of each bad field and the problem. Units are in the field names.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import os
import stat
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

import ase.io
from ase import Atoms
from ase.build import molecule as build_molecule
from ase.collections import g2
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from flows.storage.engine import check_database_url, in_memory_sqlite, redact_url, sqlite_database, with_database
from nnp_core.device import check_device
from nnp_core.sanity import DEFAULT_BOND_SCALE
from nnp_core.train_config import TrainConfig

Positive = typing.Annotated[float, Field(gt=0)]
PositiveInt = typing.Annotated[int, Field(ge=1)]


class ConfigError(ValueError):
    """A campaign file that cannot be used; ``problems`` holds (dotted path, message)."""

    def __init__(self, path: str | Path, problems: list[tuple[str, str]]) -> None:
        self.path = str(path)
        self.problems = problems
        lines = [
            f"{self.path}: {where}: {what}" if where else f"{self.path}: {what}"
            for where, what in problems
        ]
        super().__init__("\n".join(lines))

    def __reduce__(self):  # pickles whole (a Prefect state, a process pool), subclasses too
        return (self.__class__, (self.path, self.problems))


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    """A TOML string as a ``Path``, made absolute against the TOML file's folder."""
    if isinstance(value, str):
        value = Path(value).expanduser()
    if not isinstance(value, Path):
        raise ValueError(f"must be a path (a string), got {value!r}")
    base_dir = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base_dir is not None:
        value = Path(os.path.normpath(Path(base_dir) / value))
    return value


#: a path; a relative one is resolved against the TOML file's folder
ResolvedPath = typing.Annotated[Path, PlainValidator(_resolve_path, json_schema_input_type=str)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CampaignSection(_Section):
    """Name and places. ``work_dir`` defaults to ``runs/<name>`` next to the TOML file,
    ``database_url`` to ``sqlite:///<work_dir>/alflow.db``."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    work_dir: ResolvedPath = Path("runs")
    database_url: str = "sqlite:///alflow.db"

    @model_validator(mode="before")
    @classmethod
    def _default_places(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("name"), str):
            data.setdefault("work_dir", f"runs/{data['name']}")
        if isinstance(data.get("work_dir"), str | Path):
            data.setdefault("database_url", f"sqlite:///{Path(data['work_dir']) / 'alflow.db'}")
        return data

    @field_validator("work_dir")
    @classmethod
    def _usable_work_dir(cls, value: Path, info: ValidationInfo) -> Path:
        problem = _folder_problem(value, writable=_for_writing(info))
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("database_url")
    @classmethod
    def _resolve_sqlite_path(cls, value: str, info: ValidationInfo) -> str:
        problem = check_database_url(value)
        if problem is not None:
            raise ValueError(problem)
        database = sqlite_database(value)
        if database is None:
            return value
        if in_memory_sqlite(value):
            raise ValueError(
                f"{value!r} is an in-memory SQLite database: each process (every labelling task, "
                "worker and alflow command) would get its own empty one; give a file, e.g. "
                "sqlite:///alflow.db, or leave database_url out (<work_dir>/alflow.db)")
        if database.startswith("file:"):  # an SQLite URI filename (uri=true): passed on as written
            return value
        path = _resolve_path(database, info)
        if "work_dir" in info.data:  # a bad work_dir is reported once, not again through its default database
            problem = _sqlite_file_problem(path, writable=_for_writing(info))
            if problem is not None:
                raise ValueError(problem)
        return with_database(value, str(path))


def _for_writing(info: ValidationInfo) -> bool:
    """Whether the caller will write the campaign (``load_config(..., writable=True)``)."""
    return bool((info.context or {}).get("writable"))


def _nearest_existing(path: Path) -> tuple[Path, os.stat_result | None, str | None]:
    """``path`` or its nearest existing parent, its stat, or why it cannot be inspected."""
    current = path
    while True:
        try:
            return current, os.stat(current), None
        except (FileNotFoundError, NotADirectoryError):
            if current.parent == current:
                return current, None, "no existing parent folder"
            current = current.parent
        except OSError as exc:
            return current, None, f"cannot inspect {current}: {exc.strerror or exc}"


def _folder_problem(folder: Path, *, writable: bool) -> str | None:
    """None if ``folder`` is a folder or can be created as one (with ``writable``: one
    this user can write in), else why not. Where ``folder`` does not exist yet, its
    nearest existing parent is checked; creates nothing."""
    existing, status, problem = _nearest_existing(folder)
    if problem is not None:
        return problem
    assert status is not None
    where = f"{existing}" if existing == folder else f"{folder} cannot be created: {existing}"
    if not stat.S_ISDIR(status.st_mode):
        return f"{where} is a file, not a folder"
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        return f"{where} is a folder this user cannot write in"
    return None


def _sqlite_file_problem(path: Path, *, writable: bool) -> str | None:
    """None if the SQLite database file ``path`` is a file or can be created as one (with
    ``writable``: written, its -wal and -shm files beside it), else why not; creates
    nothing."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        status = None
    except OSError as exc:
        return f"cannot inspect the database file {path}: {exc.strerror or exc}"
    if status is not None and stat.S_ISDIR(status.st_mode):
        return f"the database file {path} is a folder"
    if writable and status is not None and not os.access(path, os.R_OK | os.W_OK):
        return f"the database file {path} is not writable by this user"
    problem = _folder_problem(path.parent, writable=writable)
    return None if problem is None else f"the database's folder: {problem}"


def _read_structure(path: Path) -> Atoms:
    """The first frame of ``path``; ``ValueError`` if ``ase.io.read`` cannot read it."""
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    try:
        atoms = ase.io.read(path, index=0)
    except Exception as exc:  # ase.io raises whatever its format reader raises
        raise ValueError(f"ase.io.read cannot read {path}: {exc}") from None
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise ValueError(f"no atoms in {path}")
    return atoms


def _build_molecule(name: str) -> Atoms:
    """``ase.build.molecule(name)``; ``ValueError`` naming close matches if unknown."""
    names = set(g2.names) | set(importlib.import_module("ase.build.molecule").extra)
    if name not in names:
        by_lower = {known.lower(): known for known in names}
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
        if close:
            hint = "did you mean " + " or ".join(repr(by_lower[match]) for match in close) + "?"
        else:
            hint = "names are formulas such as 'H2O' or 'CH3CH2OH'; see ase.collections.g2.names"
        raise ValueError(f"unknown ASE molecule {name!r} ({hint})")
    return build_molecule(name)


class SystemSection(_Section):
    """The starting structure (exactly one of a file or an ASE molecule name), its
    total charge (e) and spin multiplicity (2S+1)."""

    structure_file: ResolvedPath | None = None
    molecule: str | None = None
    charge: int = 0
    multiplicity: int = Field(1, ge=1)
    _atoms: Atoms = PrivateAttr()

    @field_validator("structure_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            _read_structure(value)
        return value

    @field_validator("molecule")
    @classmethod
    def _known_molecule(cls, value: str | None) -> str | None:
        if value is not None:
            _build_molecule(value)
        return value

    @model_validator(mode="after")
    def _build(self) -> SystemSection:
        if (self.structure_file is None) == (self.molecule is None):
            raise ValueError(
                "give exactly one of structure_file (a file ase.io.read reads) "
                "or molecule (an ase.build.molecule name)"
            )
        if self.structure_file is not None:
            atoms = _read_structure(self.structure_file)
        else:
            atoms = _build_molecule(str(self.molecule))
        n_electrons = int(atoms.numbers.sum()) - self.charge
        unpaired = self.multiplicity - 1
        if n_electrons < unpaired or (n_electrons - unpaired) % 2:
            raise ValueError(
                f"multiplicity {self.multiplicity} is impossible with {n_electrons} electrons "
                f"(charge {self.charge})"
            )
        self._atoms = atoms
        return self

    def atoms(self) -> Atoms:
        """A fresh copy of the starting structure."""
        return self._atoms.copy()


class ReferenceSection(_Section):
    """The reference method. ``options`` go to the backend, which validates them."""

    backend: str = "pyscf"
    method: str = Field(min_length=1)
    basis: str | None = Field(None, min_length=1)
    density_fit: bool = True
    #: SCF energy convergence, Hartree (PySCF's ``conv_tol``)
    conv_tol_Ha: Positive = 1e-9
    max_cycle: PositiveInt = 100
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _basis_for_pyscf(self) -> ReferenceSection:
        if self.backend == "pyscf" and self.basis is None:
            raise ValueError("basis is required with backend 'pyscf' (e.g. basis = \"def2-svp\")")
        return self


class CommitteeSection(_Section):
    """The committee of NNPs; ``dtype`` is also the training dtype.

    ``architecture`` is a name in ``nnp_core``'s model registry ("bpnn": Behler-Parrinello
    with ANI symmetry functions; "painn": equivariant message passing), and the other
    keys are that architecture's own settings (``nnp_core.models.architecture_settings``,
    e.g. bpnn: ``cutoff_A``, ``hidden_layers``; painn: ``cutoff_A``, ``features``,
    ``interactions``, ``radial_basis``), held as attributes with their defaults filled
    in. A setting that only another registered architecture declares is checked against
    that declaration and ignored, so one file can switch architectures; a key no
    architecture declares is an error naming it.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    architecture: str = "bpnn"
    members: int = Field(4, ge=2)
    dtype: Literal["float32", "float64"] = "float64"

    #: strict pydantic models of each registered class's settings, built on first use
    settings_models: typing.ClassVar[dict[type, type[BaseModel]]] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _registry_settings(cls, data: Any, handler: Any) -> "CommitteeSection":
        from nnp_core.models import MODEL_REGISTRY, architecture_names, architecture_settings

        if not isinstance(data, dict):
            return handler(data)
        names = architecture_names()
        chosen = data.get("architecture", cls.model_fields["architecture"].default)
        errors: list[dict[str, Any]] = []
        if chosen not in names:
            quoted = [repr(n) for n in names]
            listed = f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
            errors.append(cls._error(("architecture",), chosen, f"must be {listed} (a registered architecture)"))
        own = architecture_settings(chosen) if chosen in names else {}
        if chosen in names and (missing := MODEL_REGISTRY[chosen].missing_dependency()):
            errors.append(cls._error(("architecture",), chosen, f"{chosen!r} {missing}"))
        others = {key: arch for arch in reversed(names) for key in architecture_settings(arch)}
        core: dict[str, Any] = {}
        given: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            if key in cls.model_fields:
                core[key] = value
            elif key in own or key in others:
                given.setdefault(chosen if key in own else others[key], {})[key] = value
            elif chosen in names:  # (with an unknown architecture, only that is reported)
                close = difflib.get_close_matches(str(key), [*cls.model_fields, *own], n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"its settings: {', '.join(own) or 'none'}"
                errors.append(cls._error((key,), value, f"unknown setting of architecture {chosen!r} ({hint})"))
        if chosen in names:
            given.setdefault(chosen, {})  # its defaults
        values: dict[str, Any] = {}
        for arch, settings in given.items():
            try:
                validated = cls._settings_model(arch).model_validate(settings)
            except ValidationError as exc:
                errors += [cls._error(e["loc"], e["input"], e) for e in exc.errors()]
                continue
            if arch == chosen:
                values = validated.model_dump()
        try:
            section = handler({**core, **values})
        except ValidationError as exc:
            errors += [cls._error(e["loc"], e["input"], e) for e in exc.errors()]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)  # type: ignore[arg-type]
        return section

    @staticmethod
    def _error(loc: tuple[int | str, ...], value: Any, error: str | Any) -> dict[str, Any]:
        """Error details for ``ValidationError.from_exception_data``: a value error with
        message ``error``, or pydantic's own error ``error`` again."""
        if isinstance(error, str):
            return {"type": "value_error", "loc": loc, "input": value, "ctx": {"error": ValueError(error)}}
        return {"type": error["type"], "loc": loc, "input": value, "ctx": error.get("ctx", {})}

    @classmethod
    def _settings_model(cls, architecture: str) -> type[BaseModel]:
        """A strict pydantic model of an architecture's declared settings (see
        ``nnp_core.models.Setting``)."""
        from nnp_core.models import MODEL_REGISTRY, architecture_settings

        model_class = MODEL_REGISTRY[architecture]
        if model_class not in cls.settings_models:
            fields: dict[str, Any] = {}
            for name, setting in architecture_settings(architecture).items():
                bounds = Field(ge=setting.ge, gt=setting.gt)
                if typing.get_origin(setting.type) is list:
                    (item,) = typing.get_args(setting.type)
                    annotation: Any = typing.Annotated[list[typing.Annotated[item, bounds]],
                                                       Field(min_length=setting.min_length)]
                else:
                    annotation = typing.Annotated[setting.type, bounds]
                fields[name] = (annotation, Field(setting.default, description=setting.doc))
            cls.settings_models[model_class] = create_model(f"{architecture}_settings", __base__=_Section, **fields)
        return cls.settings_models[model_class]

    def network_hparams(self) -> dict[str, Any]:
        """Keyword arguments for ``nnp_core.models.build_model`` (besides members, seed)."""
        from nnp_core.models import architecture_hparams

        return architecture_hparams(self.architecture, self.model_extra or {})


class UDDSection(_Section):
    """Uncertainty-driven dynamics (``nnp_core.bias.UncertaintyDrivenBias``):
    E_bias = A·[exp(−σ_E²/(M·N·B²)) − 1]; it acts once a frame's ``energy_dev`` is
    about √M·B, and lowers the energy there by at most A. Defaults measured on ethanol
    (docs/benchmarks.md, "exploration-bias"): A = 0.5 eV sent 83% of the frames past
    trust_hi, A = 0.25 eV with B = 0.005 eV tripled the 90th percentile of energy_dev."""

    A_eV: float = Field(0.25, ge=0, allow_inf_nan=False)
    B_eV: Positive = 0.005


class MetadSection(_Section):
    """Well-tempered metadynamics on torsions (``nnp_core.bias.Metadynamics``): a hill of
    ``height_eV`` and width ``sigma_deg`` every ``pace_steps`` steps, per replica, on
    ``torsions`` (quadruples of 0-based atom indices; default every rotatable bond of the
    starting structure). The hills persist across generations."""

    height_eV: Positive = 0.05
    sigma_deg: float = Field(20.0, gt=0, le=180)
    pace_steps: PositiveInt = 20
    bias_factor: float = Field(10.0, gt=1, allow_inf_nan=False)
    torsions: list[typing.Annotated[list[typing.Annotated[int, Field(ge=0)]], Field(min_length=4, max_length=4)]] | None = None


class ExploreSection(_Section):
    """Committee-driven Langevin MD; ``temperatures_K`` has one value per replica, or one
    value for all (it is broadcast). ``bias`` pushes the replicas where thermal MD rarely
    goes: "udd" (towards committee disagreement, ``[explore.udd]``) or "metad"
    (metadynamics on torsions, ``[explore.metad]``); scores stay unbiased."""

    replicas: PositiveInt = 4
    temperatures_K: list[Positive] = Field(default_factory=lambda: [300.0], min_length=1)
    steps: PositiveInt = 2000
    timestep_fs: Positive = 0.5
    record_interval_steps: PositiveInt = 10
    friction_per_fs: float = Field(0.01, ge=0)
    # at a frame beyond trust_hi: "restart" from the replica's last trusted frame (at
    # most max_restarts times), or "continue" and only mark the frame (DP-GEN)
    beyond_trust: Literal["restart", "continue"] = "restart"
    max_restarts: int = Field(3, ge=0)
    bias: Literal["none", "udd", "metad"] = "none"
    udd: UDDSection = UDDSection()
    metad: MetadSection = MetadSection()
    # replica exchange (parallel tempering) between neighbouring temperatures every this
    # many steps; 0: off
    exchange_interval_steps: int = Field(0, ge=0)
    # the dtype the MD evaluates the committee in; default the committee's own
    # ([committee] dtype, also the training dtype). "float32" explores with a float32 copy
    # of a float64-trained committee: 2.1x faster for MACE at 16 replicas, same forces
    # to ~1e-6 eV/Å (docs/benchmarks.md, "mace-md-throughput")
    dtype: Literal["float32", "float64"] | None = None
    # the torch device the MD evaluates the committee on ("cpu", "cuda", "cuda:N",
    # "auto"); default [train] device. The integrator stays on the host
    device: str | None = None

    @field_validator("device")
    @classmethod
    def _device_here(cls, value: str | None) -> str | None:
        return value if value is None else check_device(value)

    @model_validator(mode="after")
    def _exchange_settings(self) -> ExploreSection:
        if self.exchange_interval_steps:
            if len(set(self.temperatures_K)) < 2:
                raise ValueError("exchange_interval_steps needs replicas at two or more temperatures")
            if self.bias == "metad":
                raise ValueError("exchange_interval_steps cannot be used with bias = \"metad\" "
                                 "(each replica has its own hills)")
        return self

    @field_validator("temperatures_K")
    @classmethod
    def _one_per_replica(cls, value: list[float], info: ValidationInfo) -> list[float]:
        replicas = info.data.get("replicas")
        if replicas is None or len(value) == replicas:
            return value
        if len(value) == 1:
            return value * replicas
        raise ValueError(f"give 1 temperature or one per replica ({replicas}), got {len(value)}")

    @field_validator("record_interval_steps")
    @classmethod
    def _within_run(cls, value: int, info: ValidationInfo) -> int:
        steps = info.data.get("steps")
        if steps is not None and value > steps:
            raise ValueError(f"must be at most steps ({value} > {steps})")
        return value


class SelectSection(_Section):
    """Candidates have trust_lo_eV_A <= max_force_dev < trust_hi_eV_A; frames with atoms
    closer than ``min_distance_A`` are dropped. With ``adaptive_trust_lo`` the lower
    edge drops, per generation, until ``max_selected_per_generation`` frames are
    candidates (``nnp_core.selection.adapt_trust_lo``; DP-GEN's model_devi_adapt_trust_lo):
    the campaign keeps labelling its most uncertain frames after its window empties.
    ``hot_share`` reserves round(hot_share x max_selected_per_generation) picks for the
    hottest replicas' frames, below trust_lo included. ``break_precursors`` labels the
    last sane frame before each replica's molecule came apart. ``stratify =
    "temperature"`` splits the remaining picks evenly over the exploration temperatures."""

    trust_lo_eV_A: float = Field(0.05, ge=0)
    trust_hi_eV_A: Positive = 0.30
    # campaigns aimed at spectra: a frame is judged on max_force_dev + dipole_weight x
    # dipole_dev ((eV/Å) per e·Å; capped below trust_hi), so frames whose dipole the
    # members disagree on are labelled sooner; needs a dipole head ([train] dipole_weight > 0)
    dipole_weight: float = Field(0.0, ge=0, allow_inf_nan=False)
    max_selected_per_generation: PositiveInt = 50
    min_distance_A: Positive = 0.5
    allow_bond_changes: bool = False
    # the bond filter: a pair is bonded while closer than bond_scale x the sum of its atoms'
    # covalent radii (ASE's natural_cutoffs); a frame whose bond graph at this scale differs
    # from the reference's is filtered, and a replica whose newest frame fails restarts from
    # the reference. 1.2 calls a C-H bond broken past 1.28 Å, which hot MD crosses (C-H at
    # 1.3-1.45 Å is 0.8 eV above the minimum for PBE, well described by restricted DFT);
    # 1.5 (C-H 1.6 Å, C-C 2.3 Å) labels the wall of a dissociation the committee gets wrong
    bond_scale: float = Field(DEFAULT_BOND_SCALE, ge=1.0, le=2.0, allow_inf_nan=False)
    adaptive_trust_lo: bool = False
    # the share of each generation's picks reserved for frames of the hottest exploration
    # replicas (max of [explore] temperatures_K), picked by diversity whatever their
    # max_force_dev below trust_hi: committees are often confidently wrong where they
    # extrapolate, so those frames never reach the window (nnp_core.selection.select_frames)
    hot_share: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    # label the last sane frame of each replica before its molecule came apart (bond graph
    # changed or atoms collided, which the sanity filters drop), one per replica per
    # generation (before its longest broken run): picked first, whatever its
    # max_force_dev below trust_hi; a committee whose members agree on a spurious
    # dissociation (a hole) otherwise never gets a label at the hole's entrance
    break_precursors: bool = False
    # "temperature": the picks left after the precursors and hot_share are split evenly over
    # the exploration temperatures, each filled by diversity from that temperature's
    # replicas (their most uncertain frames below trust_lo when their window holds too
    # few); "none": every open pick goes to the most distant frames, which with hot replicas
    # are nearly all theirs, so a biased cold replica's barrier crossings go unlabelled
    stratify: Literal["none", "temperature"] = "none"

    @field_validator("trust_hi_eV_A")
    @classmethod
    def _above_lo(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("trust_lo_eV_A")
        if low is not None and value <= low:
            raise ValueError(f"must be greater than trust_lo_eV_A ({value:g} <= {low:g})")
        return value


class _TrainBase(_Section):
    @model_validator(mode="before")
    @classmethod
    def _dtype_lives_in_committee(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dtype" in data:
            raise ValueError("dtype is set once, as committee.dtype")
        return data

    @field_validator("device", check_fields=False)
    @classmethod
    def _device_here(cls, value: str) -> str:
        return check_device(value)

    @model_validator(mode="after")
    def _valid_train_config(self) -> _TrainBase:
        try:
            TrainConfig(**self.model_dump())
        except ValueError as exc:
            raise ValueError(str(exc).split(" (got ")[0]) from None
        return self


def _train_section() -> type[_TrainBase]:
    """A strict pydantic mirror of ``TrainConfig`` (one source of fields and defaults)."""
    hints = typing.get_type_hints(TrainConfig)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        if field.name == "dtype":
            continue
        if field.default is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], field.default)
        elif field.default_factory is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], Field(default_factory=field.default_factory))
        else:
            fields[field.name] = (hints[field.name], ...)
    return create_model("TrainSection", __base__=_TrainBase, **fields)


TrainSection = _train_section()


class ConvergenceSection(_Section):
    """Stop when ``accurate_fraction`` of explored frames were trusted for
    ``patience_generations`` generations and the force MAE on those generations' fresh
    labels (pooled) is under target."""

    accurate_fraction: float = Field(0.99, gt=0, le=1)
    patience_generations: PositiveInt = 2
    force_mae_target_eV_A: Positive = 0.05


class LoopSection(_Section):
    """The initial data set and the generation loop."""

    initial_samples: PositiveInt = 20
    #: "normal_modes" / "wigner": harmonic samples around the (optimised) structure, from
    #: the reference Hessian; "displacements": Gaussian noise; "md": frames of Langevin
    #: MD at initial_temperature_K driven by initial_md_backend (a cheap level)
    initial_sampler: Literal["normal_modes", "wigner", "displacements", "md"] = "normal_modes"
    initial_temperature_K: Positive = 300.0
    #: backend name that drives the "md" sampler ("xtb": GFN2-xTB through tblite; "emt";
    #: the reference's own backend name uses the reference level itself)
    initial_md_backend: str = "xtb"
    #: steps of 0.5 fs between "md" frames (as many again equilibrate first)
    initial_md_interval_steps: PositiveInt = 100
    optimise_first: bool = True
    max_generations: PositiveInt = 10
    #: label budget: QM calculations the campaign may spend, the initial samples and
    #: failed labels included. The generation that reaches it selects only what is
    #: left, and the campaign stops there ("label budget N reached"); raise it to go on.
    #: None: no budget (max_generations and the convergence rule stop the campaign)
    max_labels: PositiveInt | None = None
    #: fraction of the initial frames held out as the fixed validation set
    validation_fraction_frames: float = Field(0.1, ge=0, lt=1)
    #: a new committee's uncertainty scale is fitted on the errors its predecessors made
    #: on the fresh labels of the last N generations (frames no committee had seen when it
    #: was scored on them); 0, or before any fresh label exists: on the validation frames
    calibration_generations: int = Field(3, ge=0)
    convergence: ConvergenceSection = ConvergenceSection()

    @field_validator("initial_md_backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        from qm_backends import available_backends

        if name.strip().lower() not in available_backends():
            raise ValueError(f"unknown backend {name!r}; available: {available_backends()}")
        return name.strip().lower()

    @property
    def initial_labels(self) -> int:
        """Labels generation 0 computes: the reference geometry, the initial samples and
        the validation frames (``ceil(validation_fraction_frames x initial_samples)``)."""
        return 1 + self.initial_samples + math.ceil(self.validation_fraction_frames * self.initial_samples)

    @model_validator(mode="after")
    def _budget_beyond_initial(self) -> LoopSection:
        if self.max_labels is not None and self.max_labels <= self.initial_labels:
            n_validation = self.initial_labels - 1 - self.initial_samples
            raise ValueError(f"max_labels ({self.max_labels}) leaves nothing for active learning: generation 0 "
                             f"alone labels {self.initial_labels} (the reference geometry, {self.initial_samples} "
                             f"initial and {n_validation} validation frames)")
        return self


class ExecutionSection(_Section):
    """Where tasks run: Prefect's thread or process runner, or a Dask cluster (an existing
    scheduler at ``dask_address``, or a ``dask_cluster_class`` with ``cluster_kwargs``)."""

    task_runner: Literal["thread", "process", "dask"] = "thread"
    max_workers: PositiveInt = 4
    dask_address: str | None = None
    dask_cluster_class: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")
    cluster_kwargs: dict[str, Any] = Field(default_factory=dict)
    label_batch_size: PositiveInt = 8

    @model_validator(mode="after")
    def _dask_settings(self) -> ExecutionSection:
        if self.task_runner != "dask" and (self.dask_address or self.dask_cluster_class):
            raise ValueError("dask_address and dask_cluster_class need task_runner = \"dask\"")
        if self.dask_address and self.dask_cluster_class:
            raise ValueError("give dask_address or dask_cluster_class, not both")
        if self.cluster_kwargs and not self.dask_cluster_class:
            raise ValueError("cluster_kwargs need dask_cluster_class")
        return self


class CampaignConfig(_Section):
    """A whole campaign, as read from one TOML file by :func:`load_config`."""

    campaign: CampaignSection
    system: SystemSection
    reference: ReferenceSection
    committee: CommitteeSection = CommitteeSection()
    explore: ExploreSection = ExploreSection()
    select: SelectSection = SelectSection()
    train: TrainSection = TrainSection()  # type: ignore[valid-type]
    loop: LoopSection = LoopSection()
    execution: ExecutionSection = ExecutionSection()
    deploy: dict[str, Any] = Field(default_factory=dict)  # validated by flows.deploy_settings.DeploySettings

    @model_validator(mode="after")
    def _backend_accepts_options(self) -> "CampaignConfig":
        from qm_backends import available_backends

        if self.reference.backend.lower() not in available_backends():
            raise ValueError(
                f"reference.backend: unknown backend {self.reference.backend!r}; "
                f"available: {available_backends()}"
            )
        from flows.backends import make_backend, make_initial_md_backend, remember_level_of_theory

        try:
            backend = make_backend(self)
        except (TypeError, ValueError, KeyError, ImportError) as exc:
            raise ValueError(f"reference: the {self.reference.backend} backend refuses these settings: {exc}") from None
        try:
            backend.validate(self.system.atoms())  # cheap checks, no SCF
        except ValueError as exc:
            raise ValueError(f"system: the starting structure is unusable: {exc}") from None
        remember_level_of_theory(self, backend)  # level_of_theory(config) builds no second backend
        if self.select.dipole_weight > 0 and self.train.dipole_weight <= 0:
            raise ValueError("select.dipole_weight needs a committee that learns dipoles: set [train] "
                             "dipole_weight > 0")
        if self.select.hot_share > 0 and len(set(self.explore.temperatures_K)) < 2:
            raise ValueError("select.hot_share needs replicas at two or more temperatures ([explore] "
                             "temperatures_K): it reserves picks for the hottest")
        if self.select.stratify == "temperature" and len(set(self.explore.temperatures_K)) < 2:
            raise ValueError("select.stratify = \"temperature\" needs replicas at two or more temperatures "
                             "([explore] temperatures_K): it splits the picks over them")
        if self.explore.bias == "metad":
            try:
                self.torsion_cvs()
            except ValueError as exc:
                raise ValueError(f"explore.metad: {exc}") from None
        if self.loop.initial_sampler == "md":
            try:
                make_initial_md_backend(self).validate(self.system.atoms())
            except (TypeError, ValueError, KeyError, ImportError) as exc:
                raise ValueError(f"loop.initial_md_backend: the {self.loop.initial_md_backend} backend cannot "
                                 f"drive the initial MD: {exc}") from None
        return self

    def train_config(self) -> TrainConfig:
        """The training settings as ``nnp_core``'s ``TrainConfig``."""
        return TrainConfig(**self.train.model_dump(), dtype=self.committee.dtype)

    def explore_device(self) -> str:
        """The device the exploration MD evaluates the committee on: ``[explore] device``,
        else ``[train] device``."""
        return self.explore.device if self.explore.device is not None else self.train.device

    def md_config(self) -> Any:
        """The exploration settings as ``nnp_core``'s ``MDConfig`` (the MD engine stops or
        restarts a replica at ``[select] trust_hi_eV_A``)."""
        from nnp_core.md import MDConfig

        explore = self.explore
        return MDConfig(timestep_fs=explore.timestep_fs, n_steps=explore.steps,
                        record_interval_steps=explore.record_interval_steps,
                        trust_hi_eV_A=self.select.trust_hi_eV_A, beyond_trust=explore.beyond_trust,
                        max_restarts=explore.max_restarts, exchange_interval_steps=explore.exchange_interval_steps)

    def torsion_cvs(self) -> Any:
        """``[explore.metad] torsions`` (or every rotatable bond of the starting structure)
        as ``nnp_core.bias.TorsionCVs``; ValueError if there are none or one is out of range."""
        from nnp_core.bias import TorsionCVs, rotatable_torsions

        atoms = self.system.atoms()
        torsions = self.explore.metad.torsions
        if torsions is None:
            torsions = rotatable_torsions(atoms)
            if not torsions:
                raise ValueError("the starting structure has no rotatable bond; give torsions = [[a, b, c, d], ...]")
        cvs = TorsionCVs(torsions, atoms.get_chemical_symbols())
        cvs.check(len(atoms))
        return cvs

    def exploration_bias(self) -> Any:
        """``[explore] bias`` as an ``nnp_core.bias`` object for this exploration (None
        for "none"); metadynamics starts without hills."""
        import math

        from nnp_core.bias import Metadynamics, UncertaintyDrivenBias

        explore = self.explore
        if explore.bias == "udd":
            return UncertaintyDrivenBias(A_eV=explore.udd.A_eV, B_eV=explore.udd.B_eV)
        if explore.bias == "metad":
            metad = explore.metad
            return Metadynamics(self.torsion_cvs(), height_eV=metad.height_eV, sigma=math.radians(metad.sigma_deg),
                                pace_steps=metad.pace_steps, bias_factor=metad.bias_factor,
                                temperatures_K=explore.temperatures_K)
        return None

    def snapshot(self) -> dict[str, Any]:
        """The whole config as JSON-able data, database password hidden."""
        data = self.model_dump(mode="json")
        data["campaign"]["database_url"] = redact_url(self.campaign.database_url)
        return data

    def level_of_theory(self) -> dict[str, Any]:
        """The backend's own canonical level-of-theory dict (what fixes the numbers),
        built once per config object (``flows.backends.level_of_theory``)."""
        from flows.backends import level_of_theory

        return level_of_theory(self)


def load_config(path: str | Path, *, writable: bool = False) -> CampaignConfig:
    """Read and validate a campaign TOML file.

    Raises :class:`ConfigError` for a missing or unreadable file, TOML syntax (with line
    and column), and every invalid field (with its dotted path). Nothing is created or
    connected to: ``campaign.database_url`` must name an installed synchronous driver and
    not an in-memory SQLite database; ``campaign.work_dir`` and a SQLite database's folder
    must be folders (or not exist yet below a folder). ``writable`` (the caller will run
    the campaign): they must also be writable by this user; without it a read-only copy
    of a campaign can still be read.
    """
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(path, [("", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [("", f"cannot read the file ({exc})")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"invalid TOML: {exc}")]) from None
    base_dir = Path(path).resolve().parent
    try:
        return CampaignConfig.model_validate(data, context={"base_dir": base_dir, "writable": writable})
    except ValidationError as exc:
        problems = [(_dotted(error["loc"]), _describe(error)) for error in exc.errors()]
        raise ConfigError(path, problems) from None


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: Any) -> str:
    """Pydantic's error in plain words, with the offending value."""
    kind, loc, value = error["type"], error["loc"], error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return "required, but missing"
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"])
    if kind in ("model_type", "dict_type"):
        return f"must be a table (got {value!r})"
    message = error["msg"].replace("Input should be", "must be")
    if isinstance(value, str | int | float | bool):
        message += f" (got {value!r})"
    return message


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    what = "section" if len(loc) == 1 else "field"
    allowed = _keys_at(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown {what} (did you mean {close[0]!r}?)"
    return f"unknown {what} (allowed: {', '.join(allowed)})"


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = CampaignConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(model.model_fields)

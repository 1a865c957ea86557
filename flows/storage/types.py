"""Column types: numpy arrays as raw little-endian bytes, and timezone-aware UTC times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import DateTime, Dialect, LargeBinary
from sqlalchemy.types import TypeDecorator


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def encode_array(values: Any, dtype: str, shape: tuple[int, ...]) -> bytes:
    """Raw bytes of ``values`` as the little-endian ``dtype``.

    ``shape`` may hold one ``-1`` (any length along that axis). Raises ``ValueError``
    when the values do not have that shape.
    """
    array = np.asarray(values)
    if array.dtype.kind == "f" and np.dtype(dtype).kind in "iub":
        raise ValueError(f"expected integers for a {dtype} array, got {array.dtype}")
    stored = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    if not _shape_matches(stored.shape, shape):
        raise ValueError(f"expected an array of shape {_show(shape)}, got {stored.shape}")
    if stored.dtype.kind in "iu" and not np.array_equal(stored, array):
        raise ValueError(f"values out of range for a {dtype} array")
    return stored.tobytes()


def decode_array(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The writable native-endian array stored by :func:`encode_array`."""
    array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    return array.reshape(shape).astype(np.dtype(dtype), copy=True)


def _shape_matches(actual: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    if len(actual) != len(expected):
        return False
    return all(e == -1 or a == e for a, e in zip(actual, expected, strict=True))


def _show(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("n" if n == -1 else str(n) for n in shape) + ")"


class NumpyArray(TypeDecorator[np.ndarray]):
    """A numpy array of fixed dtype and shape, stored as raw little-endian bytes.

    Bit-exact: a float64 array reads back identical. ``shape`` may contain one ``-1``.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(self, dtype: str, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.dtype = dtype
        self.shape = shape

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return encode_array(value, self.dtype, self.shape)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> np.ndarray | None:
        if value is None:
            return None
        return decode_array(value, self.dtype, self.shape)

    def compare_values(self, x: Any, y: Any) -> bool:
        """Element-wise equality (the default ``==`` is ambiguous for arrays)."""
        if x is None or y is None:
            return x is y
        return bool(np.array_equal(np.asarray(x), np.asarray(y)))

    def copy(self, **kw: Any) -> NumpyArray:
        return NumpyArray(self.dtype, self.shape)


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time stored as UTC; always read back timezone-aware (SQLite drops tz).

    Raises ``ValueError`` for naive datetimes, whose meaning is ambiguous.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

"""Arrow columns as NumPy arrays, without pandas and with one copy for a row-major matrix.

``pyarrow.Array.to_numpy`` imports pandas on its first call, which is a quarter of a
second of ``regserve train``'s start, spent before the first chunk leaves (and the same on
every Dask worker); a column of fixed-width numbers without nulls is viewed here from its
data buffer instead, and a column of labels is spelled through its distinct values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["numbers", "row_major", "texts"]

_CACHE_BYTES = 1 << 18
"""The bytes of one block of rows that ``row_major`` writes at once: about a core's L2 cache."""

_BLOCKED_COLUMNS = 64
"""The most columns ``row_major`` writes in blocks of rows."""


def numbers(column: pa.Array, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """A column of numbers without nulls as a read-only array of ``dtype``, cast first when it is another type.

    ``dtype`` is an integer or floating type: their Arrow buffers hold one value per item, as NumPy's do.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise ValueError(f"{dtype} is not an integer or floating type")
    arrow_type = pa.from_numpy_dtype(dtype)
    if column.type != arrow_type:
        column = column.cast(arrow_type)  # the method imports pyarrow.compute on first use: float64 never pays for it
    if column.null_count:
        raise ValueError("a column with nulls has no NumPy view")
    view = np.frombuffer(column.buffers()[1], dtype=dtype, count=len(column), offset=column.offset * dtype.itemsize)
    view.flags.writeable = False  # Arrow's memory, which other arrays of the batch may share
    return view


def texts(column: pa.Array) -> np.ndarray:
    """A column without nulls as a NumPy ``str`` array, each value spelled as ``to_numpy(...).astype(str)`` spells it.

    Strings and booleans (or a dictionary of them) go through their distinct values, the
    column's own dictionary or one made by hashing, in C: a label column has few, so only
    those become Python objects. Other types (timestamps, say) keep NumPy's spelling.
    """
    dictionary = pa.types.is_dictionary(column.type)
    value_type = column.type.value_type if dictionary else column.type
    if column.null_count:
        raise ValueError("a column with nulls has no text for every row")
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type) or pa.types.is_boolean(value_type)):
        if dictionary:
            column = column.dictionary_decode()
        return column.to_numpy(zero_copy_only=False).astype(np.str_)
    encoded = column if dictionary else column.dictionary_encode()
    distinct = np.array(encoded.dictionary.to_pylist(), dtype=np.str_)
    return distinct[numbers(encoded.indices, np.intp)]


def row_major(columns: Sequence[np.ndarray], rows: int) -> np.ndarray:
    """The float64 ``columns`` (each of ``rows`` values) as one C-ordered (rows, len(columns)) array.

    Up to ``_BLOCKED_COLUMNS`` columns it is written a block of rows at a time, so each
    block's lines stay in the cache while every column's slice is stored across them: about
    half the time of stacking the columns and copying the transpose, which goes through
    memory twice.  With more columns the Python loop costs more than the cache saves.
    """
    if len(columns) > _BLOCKED_COLUMNS:
        return np.ascontiguousarray(np.stack(columns).T)
    out = np.empty((rows, len(columns)))
    if not columns:
        return out
    block = max(64, _CACHE_BYTES // (8 * len(columns)))
    for start in range(0, rows, block):
        lines = out[start : start + block]
        for j, column in enumerate(columns):
            lines[:, j] = column[start : start + block]
    return out

"""
Files of the command line, shared by all model families: reading ``DATA`` (``.npy`` or
CSV) into a float64 array, writing results (``.npy``, CSV or stdout), and saving and loading
parameter files (``.npz`` or ``.json``). Every problem with a file is a :class:`CLIError`
whose message names the file, reported by
:func:`~pyroem.cli.commands.main` as one line.
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np


class CLIError(ValueError):
    """A user error, reported as one line."""


# ---------------------------------------------------------------------------- data files
def read_array(path):
    """
    Read a 1-D or 2-D numeric array from ``path`` (``.npy``, else CSV) as float64.

    :raises CLIError: naming the file and the problem (missing, unreadable, ragged,
        non-numeric, empty, NaN/inf).
    """
    path = _existing(path)
    if path.suffix.lower() == ".npy":
        values = _read_npy(path)
    else:
        values = _read_csv(path)[1]
    return _checked(path, values)


def read_labelled(path, kind="value"):
    """
    Read a table whose first column is a label and whose other columns are numbers
    (``.npy``: a numeric 2-D array; CSV: labels of any text).

    :param str kind: what the values are, for messages (``"embedding"``).
    :returns: ``(labels (N,), values (N, D))``: the labels as float64 when every label is a
        number (as :func:`read_array` reads them), else as strings; the values as float64.
    :raises CLIError: as :func:`read_array`; and when there is no column after the labels.
    """
    path = _existing(path)
    if path.suffix.lower() == ".npy":
        table = _read_npy(path)
        if table.ndim != 2 or table.shape[1] < 2:
            raise CLIError(f"{path}: expected a label column and at least one {kind} "
                           f"column, got shape {table.shape}")
        table = _checked(path, table)
        return table[:, 0], table[:, 1:]
    labels, values = _read_csv(path, labelled=True)
    if values.shape[0] and values.shape[1] < 1:
        raise CLIError(f"{path}: expected a label column and at least one {kind} column, "
                       "got 1 column")
    if all(_is_number(v) for v in labels):  # numeric labels, checked as numbers
        table = _checked(path, np.column_stack([np.asarray(labels, dtype=np.float64),
                                                 values]) if len(labels) else values)
        return table[:, 0], table[:, 1:]
    values = _checked(path, values, first_column=2)
    return np.asarray([v.strip() for v in labels]), values


def _existing(path):
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    return path


def _checked(path, values, first_column=1):
    """``values`` after checking that it has rows and holds no NaN or inf."""
    if values.shape[0] == 0:
        raise CLIError(f"{path}: no data rows")
    bad = ~np.isfinite(values)
    if bad.any():
        index = np.argwhere(bad)[0]
        where = f"row {index[0] + 1}"
        if values.ndim == 2:
            where += f", column {index[1] + first_column}"
        raise CLIError(f"{path}: NaN or inf at {where}")
    return values


def _read_npy(path):
    """A numeric 1-D or 2-D ``.npy`` array as float64."""
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CLIError(f"{path}: not a readable .npy array ({e})") from None
    if values.dtype.kind not in "biuf":
        raise CLIError(f"{path}: expected a numeric array, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if values.ndim not in (1, 2):
        raise CLIError(f"{path}: expected a 1-D or 2-D array, got shape {values.shape}")
    return values


def _read_csv(path, labelled=False):
    """
    The rows of a CSV file: ``(labels, values (N, D) float64)``, ``labels`` the first
    field of each row as text when ``labelled`` (the values then the other fields), else
    ``None``. Blank lines and ``#`` comment lines are skipped, and so is a header: the
    first row, when none of its fields is a number. Any other field that is not a number
    is an error naming its line, data row and column: a malformed first row
    (``3.6,79x``) is never taken for a header.
    """
    rows, labels, width, header_allowed = [], [], None, True
    skip = 1 if labelled else 0
    try:
        with open(path, newline="") as f:
            for lineno, fields in enumerate(csv.reader(f), 1):
                if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                    continue
                numeric = [_is_number(v) for v in fields]
                if header_allowed and not any(numeric):  # a header names the columns
                    header_allowed = False
                    continue
                header_allowed = False
                if labelled and not fields[0].strip():
                    raise CLIError(f"{path}, line {lineno}: row {len(rows) + 1}, column 1: "
                                   "empty label")
                bad = next((c for c in range(skip, len(fields)) if not numeric[c]), None)
                if bad is not None:
                    raise CLIError(f"{path}, line {lineno}: row {len(rows) + 1}, column "
                                   f"{bad + 1}: {fields[bad].strip()!r} is not a number")
                row = [float(v) for v in fields[skip:]]
                if width is None:
                    width = len(row)
                elif len(row) != width:
                    raise CLIError(f"{path}, line {lineno}: expected {width + skip} values, "
                                   f"got {len(row) + skip}")
                rows.append(row)
                if labelled:
                    labels.append(fields[0])
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text (CSV) file; use .npy for binary arrays") from None
    except csv.Error as e:
        raise CLIError(f"{path}: malformed CSV ({e})") from None
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)
    return (labels if labelled else None), values


def _is_number(v):
    try:
        float(v)
        return True
    except ValueError:
        return False


def write_array(values, path=None, fmt="%.10g"):
    """Write ``values`` to ``path`` (``.npy``, else CSV) or, without a path, to stdout."""
    values = np.asarray(values)
    if path is None:
        np.savetxt(sys.stdout, values, fmt=fmt, delimiter=",")
    elif Path(path).suffix.lower() == ".npy":
        np.save(path, values)
    else:
        np.savetxt(path, values, fmt=fmt, delimiter=",")


# ---------------------------------------------------------------------------- parameter files
def save_params(params, path):
    """Save a dict of parameters (arrays, strings, numbers) as ``.npz`` or ``.json``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        text = json.dumps({k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                           for k, v in params.items()}, indent=2)
        Path(path).write_text(text + "\n")
    elif suffix == ".npz":
        np.savez(path, **{k: np.asarray(v) for k, v in params.items()})
    else:
        raise CLIError(f"{path}: parameter files must end in .npz or .json")


def load_params(path):
    """Load parameters saved by :func:`save_params`; values as NumPy arrays or scalars."""
    path = Path(path)
    if path.suffix.lower() not in (".npz", ".json"):
        raise CLIError(f"{path}: parameter files must end in .npz or .json")
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise ValueError("expected a JSON object")
            return {k: np.asarray(v) if isinstance(v, list) else v for k, v in raw.items()}
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] if f[k].ndim else f[k].item() for k in f.files}
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        raise CLIError(f"{path}: not a readable parameter file ({e})") from None


def param_arrays(params, *names):
    """The named float64 arrays of a loaded parameter file (one-line errors if missing,
    malformed, or not finite)."""
    try:
        arrays = [np.asarray(params[name], dtype=np.float64) for name in names]
    except KeyError as e:
        raise CLIError(f"parameter file has no {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise CLIError(f"parameter file has a malformed value ({e})") from None
    for name, array in zip(names, arrays):
        if not np.isfinite(array).all():
            raise CLIError(f"parameter file: {name!r} holds NaN or inf")
    return arrays


def param_options(params, **defaults):
    """Scalar options of a parameter file, converted to the type of their defaults."""
    try:
        return [type(d)(params.get(k, d)) for k, d in defaults.items()]
    except (TypeError, ValueError) as e:
        raise CLIError(f"parameter file has a malformed value ({e})") from None

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
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        values = _read_npy(path)
    else:
        values = _read_csv(path)
    if values.shape[0] == 0:
        raise CLIError(f"{path}: no data rows")
    bad = ~np.isfinite(values)
    if bad.any():
        index = np.argwhere(bad)[0]
        where = f"row {index[0] + 1}" + (f", column {index[1] + 1}" if values.ndim == 2 else "")
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


def _read_csv(path):
    """The numeric rows of a CSV file as ``(N, D)`` float64 (comment lines and a header
    row skipped)."""
    rows, width, header_allowed = [], None, True
    try:
        with open(path, newline="") as f:
            for lineno, fields in enumerate(csv.reader(f), 1):
                if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                    continue
                try:
                    row = [float(v) for v in fields]
                except ValueError:
                    if header_allowed:  # the first non-comment line may name the columns
                        header_allowed = False
                        continue
                    bad = next(v for v in fields if not _is_number(v))
                    raise CLIError(f"{path}, line {lineno}: {bad.strip()!r} is not a "
                                   "number") from None
                header_allowed = False
                if width is None:
                    width = len(row)
                elif len(row) != width:
                    raise CLIError(f"{path}, line {lineno}: expected {width} values, "
                                   f"got {len(row)}")
                rows.append(row)
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text (CSV) file; use .npy for binary arrays") from None
    except csv.Error as e:
        raise CLIError(f"{path}: malformed CSV ({e})") from None
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)


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
    """The named float64 arrays of a loaded parameter file (one-line errors if missing or
    malformed)."""
    try:
        return [np.asarray(params[name], dtype=np.float64) for name in names]
    except KeyError as e:
        raise CLIError(f"parameter file has no {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise CLIError(f"parameter file has a malformed value ({e})") from None


def param_options(params, **defaults):
    """Scalar options of a parameter file, converted to the type of their defaults."""
    try:
        return [type(d)(params.get(k, d)) for k, d in defaults.items()]
    except (TypeError, ValueError) as e:
        raise CLIError(f"parameter file has a malformed value ({e})") from None

r"""
Checkpoints of built-in models: ``model.save(path)`` and ``pyroem.load(path)``.

A checkpoint holds what defines a fitted model and nothing else: the **configuration**
(the constructor's arguments) and the **model parameters** (the module's unconstrained
tensors, so that loading gives them back bit for bit). The guide's q (``q_*``: one row per
training point for a mixture, one Gaussian per speaker for PLDA) is fitting state, not
part of the model: it is left out, so a checkpoint does not grow with, or carry, the
training data (``state_dict()`` keeps it, for an exact fit state).

Two containers, chosen by the file's suffix, both loaded without executing code:

- ``.npz``: numpy's archive, read with ``allow_pickle=False``; the header is a JSON string;
- anything else: ``torch.save`` of plain dicts, read with ``torch.load(weights_only=True)``.

Layout (format version 1)::

    {"format": "pyroem", "version": 1, "class": "GaussianMixture",
     "config": {"num_components": 2, ...}, "params": {"weights_unconstrained": tensor, ...}}

A file that is not a pyroem checkpoint, of another model class, or written by a newer
pyroem (a higher version) is refused with an error that says so.
"""

import json
import os

import numpy as np
import torch

FORMAT = "pyroem"
VERSION = 1

#: built-in model classes by name (filled by :class:`~pyroem.models.EMModel` subclasses)
MODEL_CLASSES = {}


def _is_guide(name):
    return name.rsplit(".", 1)[-1].startswith("q_")


def checkpoint(model):
    """The checkpoint dict of ``model`` (configuration and model parameters)."""
    params = {k: v.detach().clone() for k, v in model.state_dict().items()
              if torch.is_tensor(v) and not _is_guide(k)}
    return {"format": FORMAT, "version": VERSION, "class": type(model).__name__,
            "config": model.config(), "params": params}


def save(model, path, readable=None):
    """Write ``model``'s checkpoint to ``path`` (``.npz``: numpy's archive; otherwise
    ``torch.save``).

    :param dict readable: for ``.npz`` only, further arrays stored under their own names
        for people reading the file with numpy (e.g. ``weights``, ``means``,
        ``covariances``, as the command line writes them); loading ignores them.
    """
    ckpt = checkpoint(model)
    if readable and not str(path).endswith(".npz"):
        raise ValueError("readable arrays are stored in .npz checkpoints only")
    if str(path).endswith(".npz"):
        config, tensors = _split_config(ckpt["config"])
        header = dict(ckpt, config=config, params=sorted(ckpt["params"]),
                      config_tensors=sorted(tensors))
        arrays = {f"param:{k}": v.cpu().numpy() for k, v in ckpt["params"].items()}
        arrays.update({f"config:{k}": v.cpu().numpy() for k, v in tensors.items()})
        dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in
                  {**ckpt["params"], **tensors}.items()}
        header["dtypes"] = dtypes
        for key, value in (readable or {}).items():
            if key.startswith(("__", "param:", "config:")):
                raise ValueError(f"readable array name {key!r} is reserved")
            arrays[key] = np.asarray(value)
        np.savez(path, __header__=np.array(json.dumps(header)), **arrays)
    else:
        torch.save(ckpt, path)


def _split_config(config):
    """JSON-able configuration and its tensor-valued entries (e.g. concentrations)."""
    plain = {k: v for k, v in config.items() if not torch.is_tensor(v)}
    return plain, {k: v for k, v in config.items() if torch.is_tensor(v)}


def is_checkpoint(path):
    """Whether ``path`` is an ``.npz`` file with a pyroem checkpoint header (cheap: reads
    the archive's index only) or any other file (then :func:`read` decides)."""
    if not str(path).endswith(".npz"):
        return True
    try:
        with np.load(path, allow_pickle=False) as data:
            return "__header__" in data.files
    except (OSError, ValueError, EOFError):
        return False


def read(path):
    """The checkpoint dict stored at ``path``, checked to be a pyroem checkpoint of a
    version this pyroem reads (no code is executed while reading)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        ckpt = _read_npz(path) if str(path).endswith(".npz") else torch.load(
            path, weights_only=True, map_location="cpu")
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path!r} is not a pyroem checkpoint ({e})") from None
    except Exception as e:  # pickle's UnpicklingError and kin: not one of ours
        raise ValueError(f"{path!r} is not a pyroem checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a pyroem checkpoint")
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > VERSION:
        raise ValueError(f"{path!r} was written by a newer pyroem (checkpoint format "
                         f"{ckpt.get('version')}); this one reads format {VERSION} and older")
    return ckpt


def _read_npz(path):
    with np.load(path, allow_pickle=False) as data:
        if "__header__" not in data.files:
            raise ValueError("no pyroem header")
        header = json.loads(str(data["__header__"]))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            return header
        dtypes = header.pop("dtypes")

        def tensor(key, name):
            return torch.from_numpy(data[key].copy()).to(getattr(torch, dtypes[name]))

        header["params"] = {k: tensor(f"param:{k}", k) for k in header["params"]}
        header["config"].update({k: tensor(f"config:{k}", k)
                                 for k in header.pop("config_tensors")})
    return header


def load(path, expected=None):
    """
    The model stored at ``path``.

    :param expected: a model class: refuse a checkpoint of another class.
    :raises ValueError: for a file that is not a pyroem checkpoint, of another class, or
        of a newer format.
    """
    ckpt = read(path)
    name = ckpt.get("class")
    if expected is not None and name != expected.__name__:
        raise ValueError(f"{path!r} holds a {name} checkpoint, not a {expected.__name__}")
    cls = MODEL_CLASSES.get(name) if expected is None else expected
    if cls is None:
        raise ValueError(f"{path!r} holds a checkpoint of an unknown model class {name!r}")
    model = cls(**ckpt["config"])
    model.load_state_dict(ckpt["params"])
    return model

"""
Sequence data for the hidden Markov models: one sequence, a list of sequences of
different lengths, or a padded batch with ``lengths``, all turned into one padded batch
``(B, T, ...)`` with its ``lengths (B,)``, and per-frame results turned back into the
form the data came in.

Two kinds of frames: vectors of ``dim`` floats (Gaussian emissions) and integer symbols
in ``[0, num_symbols)`` (categorical emissions).
"""

import weakref

import numpy as np
import torch

from pyroem.distributions.features import value_range
from pyroem.models.checks import as_float_tensor, check_finite, check_model_data

SINGLE, LIST, PADDED = "single", "list", "padded"


def _as_symbols(x, name, num_symbols):
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} could not be read as an integer array: {e}") from None
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must hold integer symbols, got dtype {x.dtype}")
    if x.is_floating_point():
        check_finite(x, name)
        if not torch.equal(x, x.round()):
            raise ValueError(f"{name} must hold integer symbols, got non-integer values")
    x = x.long()
    if x.numel() and (x.min() < 0 or x.max() >= num_symbols):
        raise ValueError(f"{name} symbols must lie in [0, {num_symbols}), got values in "
                         f"[{int(x.min())}, {int(x.max())}]")
    return x


def _check_lengths(lengths, batch, max_len):
    if not torch.is_tensor(lengths):
        lengths = torch.as_tensor(np.asarray(lengths))
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    lengths = lengths.long().reshape(-1)
    if lengths.shape[0] != batch:
        raise ValueError(f"lengths must have one entry per sequence ({batch}), got "
                         f"{lengths.shape[0]}")
    if batch and (lengths.min() < 1 or lengths.max() > max_len):
        raise ValueError(f"lengths must lie in [1, {max_len}] (the padded length), got "
                         f"values in [{int(lengths.min())}, {int(lengths.max())}]")
    return lengths


class _Frames:
    """What a frame is: ``dim`` floats (in ``dtype``), or an integer symbol below
    ``num_symbols`` when that is given."""

    def __init__(self, dim, num_symbols, dtype):
        self.dim, self.num_symbols, self.dtype = dim, num_symbols, dtype
        self.symbols = num_symbols is not None

    def convert(self, seq, name):
        if self.symbols:
            return _as_symbols(seq, name, self.num_symbols)
        return check_finite(as_float_tensor(seq, name, self.dtype), name)


def _pack_list(x, frames, name):
    """A list of sequences, zero-padded to the longest: ``(padded, lengths)``."""
    if len(x) == 0:
        raise ValueError(f"{name} is an empty list of sequences")
    seqs = []
    for i, seq in enumerate(x):
        seq = frames.convert(seq, f"{name}[{i}]")
        if not frames.symbols and seq.dim() == 1 and frames.dim == 1:
            seq = seq.unsqueeze(-1)
        if seq.dim() != (1 if frames.symbols else 2) or (
                not frames.symbols and seq.shape[-1] != frames.dim):
            shape = "(T,)" if frames.symbols else f"(T, {frames.dim})"
            raise ValueError(f"{name}[{i}] must have shape {shape}, got {tuple(seq.shape)}")
        if seq.shape[0] == 0:
            raise ValueError(f"{name}[{i}] is an empty sequence")
        seqs.append(seq)
    if not frames.symbols:
        # one dtype for the batch: the first sequence's unless one was asked for
        dt = seqs[0].dtype if frames.dtype is None else frames.dtype
        seqs = [s.to(dt) for s in seqs]
    lengths = torch.tensor([s.shape[0] for s in seqs])
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


def _symbol_form(x, lengths, name):
    """Symbols: ``(T,)`` is one sequence, ``(B, T)`` a padded batch."""
    if x.dim() == 1 and lengths is None:
        return SINGLE, x.unsqueeze(0)
    if x.dim() == 2:
        return PADDED, x
    raise ValueError(f"{name} must have shape (T,) or a padded (B, T), got {tuple(x.shape)}")


def _vector_form(x, lengths, dim, name):
    """Vectors: ``(T, D)`` is one sequence, ``(B, T, D)`` a padded batch; with ``D = 1``
    also ``(T,)``, and ``(B, T)`` when ``lengths`` say it is a batch."""
    if dim == 1 and x.dim() == 1 and lengths is None:
        form, x = SINGLE, x.reshape(1, -1, 1)
    elif dim == 1 and x.dim() == 2 and lengths is not None:
        form, x = PADDED, x.unsqueeze(-1)
    elif x.dim() == 2 and lengths is None:
        form, x = SINGLE, x.unsqueeze(0)
    elif x.dim() == 3:
        form = PADDED
    else:
        raise ValueError(f"{name} must have shape (T, {dim}), a padded (B, T, {dim}) with "
                         f"lengths, or be a list of (T, {dim}) sequences; got "
                         f"{tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(f"{name} must have {dim} features in its last dimension, got "
                         f"shape {tuple(x.shape)}")
    return form, x


def _zero_padding(x, lengths, symbols):
    """The padding of a batch set to zero: never read by the model, but it must be
    harmless (finite, a valid symbol). ``x`` itself is not modified."""
    B, T = x.shape[:2]
    keep = torch.arange(T) < lengths.unsqueeze(-1)
    if bool(keep.all()):
        return x
    if symbols:
        return x.masked_fill(~keep, 0)
    return x * keep.view(B, T, 1)


def pack_sequences(x, lengths=None, *, dim=None, num_symbols=None, dtype=None, name="x"):
    """
    Validate sequence data and return ``(padded, lengths, form)``.

    :param x: vector data (``dim`` given): a ``(T, D)`` tensor (``(T,)`` when ``D == 1``),
        a list of such, or a padded ``(B, T, D)`` tensor (``(B, T)`` when ``D == 1`` and
        ``lengths`` is given). Symbol data (``num_symbols`` given): a ``(T,)`` integer
        tensor, a list of such, or a padded ``(B, T)`` tensor.
    :param lengths: ``(B,)`` lengths of a padded batch (all ``T`` when omitted).
    :param dtype: the floating dtype of vector data (``None``: the data's own, integer
        or boolean data promoted to float64).
    :returns: ``padded`` of shape ``(B, T, D)`` (or ``(B, T)`` long for symbols; padding is
        zero), ``lengths (B,)`` long, and ``form`` (``"single"``, ``"list"``, ``"padded"``)
        so that results can be returned in the shape the data came in.
    :raises ValueError: on empty data, wrong shapes, NaN/inf or bad lengths.
    """
    frames = _Frames(dim, num_symbols, dtype)
    if isinstance(x, (list, tuple)):
        if lengths is not None:
            raise ValueError("lengths is only used with a padded tensor, not with a list")
        padded, lengths = _pack_list(x, frames, name)
        return padded, lengths, LIST
    x = frames.convert(x, name)
    if frames.symbols:
        form, x = _symbol_form(x, lengths, name)
    else:
        form, x = _vector_form(x, lengths, dim, name)
    B, T = x.shape[:2]
    if B == 0 or T == 0:
        raise ValueError(f"{name} holds no data (shape {tuple(x.shape)})")
    if form == SINGLE and lengths is not None:
        raise ValueError("lengths is only used with a padded batch")
    lengths = torch.full((B,), T) if lengths is None else _check_lengths(lengths, B, T)
    if form == PADDED:
        x = _zero_padding(x, lengths, frames.symbols)
    return x, lengths, form


def unpack(values, lengths, form):
    """Per-frame results ``(B, T, ...)`` back in the data's form (one ``(T, ...)``
    tensor, a list, or the padded batch)."""
    if form == SINGLE:
        return values[0]
    if form == LIST:
        return [v[:n] for v, n in zip(values, lengths.tolist())]
    return values


def unpack_scalar(values, form):
    """Per-sequence results ``(B,)``: a 0-dim tensor for a single sequence."""
    return values[0] if form == SINGLE else values


# (id(x), id(lengths), dim, num_symbols, dtype) -> (weakrefs to x and lengths, their
# versions): arguments that passed check_padded and have not changed since (an in-place
# change bumps a tensor's version), so that EM checks its data once per fit, not twice
# per iteration (bench/hmm.py --case tiny: the checks were 9% of an iteration)
_PASSED = {}


def check_padded(x, lengths, *, dim=None, num_symbols=None, dtype=None):
    """
    Check the arguments of an HMM's Pyro ``model``, ``e_step`` and statistics: the padded
    batch and lengths that :func:`pack_sequences` returns (``m.prepare(x)``), nothing
    reshaped or converted. Vector frames: ``x (B, T, dim)`` of ``dtype``, finite; symbol
    frames: ``x (B, T)`` of an integer dtype with values in ``[0, num_symbols)``;
    ``lengths (B,)`` integers in ``[1, T]``. Arguments that passed unchanged are not
    checked again.

    :raises ValueError: naming what was expected.
    """
    key = (id(x), id(lengths), dim, num_symbols, dtype)
    hit = _PASSED.get(key)
    if hit is not None and hit[0]() is x and hit[1]() is lengths \
            and hit[2] == (x._version, lengths._version):
        return x, lengths
    _check_padded(x, lengths, dim, num_symbols, dtype)
    if not x.requires_grad:
        drop = lambda _, k=key: _PASSED.pop(k, None)
        _PASSED[key] = (weakref.ref(x, drop), weakref.ref(lengths, drop),
                        (x._version, lengths._version))
    return x, lengths


def _check_padded(x, lengths, dim, num_symbols, dtype):
    prepare = "m.prepare(x) or m.prepare(x_padded, lengths)"
    symbols = num_symbols is not None
    shape = ("B", "T") if symbols else ("B", "T", dim)
    check_model_data(x, shape, None if symbols else dtype, "x", prepare)
    if symbols:
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"x must hold integer symbols, got dtype {x.dtype} (use {prepare})")
        low, high = value_range(x)  # cached: the data of a fit are checked once
        if low < 0 or high >= num_symbols:
            raise ValueError(f"x symbols must lie in [0, {num_symbols}), got values in "
                             f"[{low}, {high}]")
    else:
        check_finite(x, "x")
    B, T = x.shape[:2]
    if not torch.is_tensor(lengths) or lengths.shape != (B,) or lengths.is_floating_point() \
            or lengths.is_complex() or lengths.dtype == torch.bool:
        got = (f"shape {tuple(lengths.shape)}, dtype {lengths.dtype}" if torch.is_tensor(lengths)
               else type(lengths).__name__)
        raise ValueError(f"lengths must be an integer tensor of shape ({B},), one per "
                         f"sequence of x, got {got} (use {prepare})")
    low, high = value_range(lengths)  # cached, as the data's checks: once per fit
    if low < 1 or high > T:
        raise ValueError(f"lengths must lie in [1, {T}] (the padded length), got values in "
                         f"[{low}, {high}]")

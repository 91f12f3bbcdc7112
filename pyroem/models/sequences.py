"""Sequence data for the hidden Markov models: one sequence, a list of sequences of
different lengths, or a padded batch with ``lengths``, all turned into one padded batch."""

import numpy as np
import torch

from pyroem.models.checks import as_float_tensor, check_finite

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


def pack_sequences(x, lengths=None, *, dim=None, num_symbols=None, dtype=None, name="x"):
    """
    Validate sequence data and return ``(padded, lengths, form)``.

    :param x: Gaussian data (``dim`` given): a ``(T, D)`` tensor (``(T,)`` when ``D == 1``),
        a list of such, or a padded ``(B, T, D)`` tensor (``(B, T)`` when ``D == 1`` and
        ``lengths`` is given). Symbol data (``num_symbols`` given): a ``(T,)`` integer
        tensor, a list of such, or a padded ``(B, T)`` tensor.
    :param lengths: ``(B,)`` lengths of a padded batch (all ``T`` when omitted).
    :returns: ``padded`` of shape ``(B, T, D)`` (or ``(B, T)`` long for symbols; padding is
        zero), ``lengths (B,)`` long, and ``form`` (``"single"``, ``"list"``, ``"padded"``)
        so that results can be returned in the shape the data came in.
    :raises ValueError: on empty data, wrong shapes, NaN/inf or bad lengths.
    """
    symbols = num_symbols is not None
    event = 0 if symbols else 1

    def convert(seq, label):
        if symbols:
            return _as_symbols(seq, label, num_symbols)
        seq = check_finite(as_float_tensor(seq, label, dtype), label)
        return seq

    if isinstance(x, (list, tuple)):
        if lengths is not None:
            raise ValueError("lengths is only used with a padded tensor, not with a list")
        if len(x) == 0:
            raise ValueError(f"{name} is an empty list of sequences")
        seqs = []
        for i, seq in enumerate(x):
            seq = convert(seq, f"{name}[{i}]")
            if not symbols and seq.dim() == 1 and dim == 1:
                seq = seq.unsqueeze(-1)
            want = 1 + event
            if seq.dim() != want or (not symbols and seq.shape[-1] != dim):
                shape = "(T,)" if symbols else f"(T, {dim})"
                raise ValueError(f"{name}[{i}] must have shape {shape}, got {tuple(seq.shape)}")
            if seq.shape[0] == 0:
                raise ValueError(f"{name}[{i}] is an empty sequence")
            seqs.append(seq)
        if not symbols:
            dt = seqs[0].dtype if dtype is None else dtype
            seqs = [s.to(dt) for s in seqs]
        lens = torch.tensor([s.shape[0] for s in seqs])
        padded = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        return padded, lens, LIST

    x = convert(x, name)
    if symbols:
        if x.dim() == 1 and lengths is None:
            form, x = SINGLE, x.unsqueeze(0)
        elif x.dim() == 2:
            form = PADDED
        else:
            raise ValueError(f"{name} must have shape (T,) or a padded (B, T), got "
                             f"{tuple(x.shape)}")
    else:
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
    B, T = x.shape[:2]
    if B == 0 or T == 0:
        raise ValueError(f"{name} holds no data (shape {tuple(x.shape)})")
    if form == SINGLE and lengths is not None:
        raise ValueError("lengths is only used with a padded batch")
    lengths = torch.full((B,), T) if lengths is None else _check_lengths(lengths, B, T)
    if form == PADDED:
        # padding is never read by the model; make it harmless (zero) without touching x
        keep = torch.arange(T) < lengths.unsqueeze(-1)
        if not bool(keep.all()):
            x = x * keep.view(B, T, *([1] * event)) if not symbols else x.masked_fill(~keep, 0)
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

r"""
Partial observation for the hidden Markov models (:mod:`pyroem.models.partial`):
missing values, labelled frames and per-sequence weights, all exact.

- ``obs_mask`` has the data's form (one sequence, a list, or padded). A frame with no
  observed value has no emission, :math:`b_t(k) = 1`: the chain passes through it and
  its emission statistics count nothing. A frame with some dimensions missing (vector
  frames) has the marginal density of its observed part and, for Gaussian emissions,
  the expected moments of Ghahramani and Jordan (1994) in the M-step (an emission that
  has ``masked_log_prob`` and ``masked_statistics``; any other takes whole frames only).
- ``labels`` (``-1`` = unknown, one per frame, in the data's form) clamp the states:
  :math:`b_t(k) \leftarrow b_t(k)\, \mathbb 1[k = l_t]`, so forward-backward gives
  :math:`p(z | X, z_L = l)` and :math:`\log p(X, z_L = l)` exactly.
- ``sample_weight`` (one per sequence): :math:`\sum_b w_b \log p(X_b)`; the expected
  statistics of sequence ``b`` are multiplied by :math:`w_b` (the pairwise counts by
  running the recursion once per distinct weight, as they come summed over sequences).
"""

import pyro
import torch
from pyro import poutine

from pyroem.models import partial as po
from pyroem.models.hmm.sequences import pack_sequences
from pyroem.ops.recursions import forward_backward, path_statistics, viterbi


def _fill_one(x, mask, name):
    x = po._tensor(x, name)
    mask = po.check_obs_mask(mask, x.shape, name.replace("x", "obs_mask", 1))
    if x.is_floating_point():
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype)), mask
    return x.masked_fill(~mask, 0), mask


def fill_missing(x, obs_mask):
    """``(x, obs_mask)`` with the missing entries of ``x`` replaced by zeros (new
    tensors; ``x`` untouched), in the data's form: a tensor with a mask of its shape, or
    a list with a list of masks."""
    if isinstance(x, (list, tuple)):
        if not isinstance(obs_mask, (list, tuple)) or len(obs_mask) != len(x):
            raise ValueError("obs_mask must have the data's form: a list of masks, one per "
                             f"sequence ({len(x)})")
        pairs = [_fill_one(s, m, f"x[{i}]") for i, (s, m) in enumerate(zip(x, obs_mask))]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if isinstance(obs_mask, (list, tuple)):
        raise ValueError("obs_mask must have the data's form: a tensor of the data's shape")
    return _fill_one(x, obs_mask, "x")


def _same_layout(padded, lengths, ref_shape, ref_lengths, name):
    if tuple(padded.shape) != tuple(ref_shape) or not torch.equal(lengths, ref_lengths):
        raise ValueError(f"{name} must have the data's shape and lengths: padded "
                         f"{tuple(padded.shape)} against the data's {tuple(ref_shape)}")


def pack_mask(mask, lengths, x_padded, x_lengths, symbols):
    """The mask in the padded layout of the data, ``(B, T, D)`` (``(B, T)`` for
    symbols), False on padding."""
    if isinstance(mask, (list, tuple)):
        as_int = [m.long() for m in mask]
    else:
        as_int = mask.long()
    if symbols:
        padded, got, _ = pack_sequences(as_int, lengths, num_symbols=2, name="obs_mask")
    else:
        padded, got, _ = pack_sequences(as_int, lengths, dim=x_padded.shape[-1],
                                        dtype=torch.float64, name="obs_mask")
    padded = padded > 0.5
    _same_layout(padded, got, x_padded.shape, x_lengths, "obs_mask")
    return padded


def pack_labels(labels, lengths, num_states, x_padded, x_lengths):
    """Per-frame labels in ``[-1, K)`` in the data's form, as a padded ``(B, T)`` long
    tensor (``-1`` on padding)."""
    if isinstance(labels, (list, tuple)):
        items = [po.check_labels(s, po._tensor(s, f"labels[{i}]").shape, num_states,
                                 f"labels[{i}]") + 1 for i, s in enumerate(labels)]
    else:
        items = po.check_labels(labels, po._tensor(labels, "labels").shape, num_states) + 1
    # shifted by one, labels are symbols in [0, K]: packed (and padded with 0) as such
    padded, got, _ = pack_sequences(items, lengths, num_symbols=num_states + 1, name="labels")
    _same_layout(padded, got, x_padded.shape[:2], x_lengths, "labels")
    return padded - 1


def frame_mask(obs_mask, symbols):
    """``(B, T)``: the frames with at least one observed value."""
    return obs_mask if symbols else obs_mask.any(-1)


def emission_log_prob(emission, x, obs_mask, labels, grad=False):
    r""":math:`\log b_t(k)` ``(B, T, K)`` with the partial observation: the marginal of
    the observed part (0 on a frame with none) and :math:`-\infty` off a known label."""
    if obs_mask is None:
        log_emit = emission.log_prob(x, grad=grad)
    else:
        log_emit = _masked_log_prob(emission, x, obs_mask, grad)
    if labels is not None:
        log_emit = log_emit + po.label_clamp(labels, emission.num_states, log_emit.dtype)
    return log_emit


def _masked_log_prob(emission, x, obs_mask, grad):
    symbols = obs_mask.dim() == 2
    frames = frame_mask(obs_mask, symbols)
    if not symbols and not bool((obs_mask == frames.unsqueeze(-1)).all()):
        masked = getattr(emission, "masked_log_prob", None)
        if masked is None:
            raise ValueError(f"{type(emission).__name__} takes whole frames missing only "
                             "(obs_mask the same for every dimension of a frame)")
        return masked(x, obs_mask, grad=grad)
    log_emit = emission.log_prob(x, grad=grad)
    return log_emit.masked_fill(~frames.unsqueeze(-1), 0.0)


def emission_statistics(emission, gamma, x, obs_mask):
    """The emission's expected statistics under ``gamma (B, T, K)``: frames with no
    observed value count nothing; frames with some dimensions missing go through the
    emission's ``masked_statistics``."""
    if obs_mask is None:
        return emission.expected_statistics(gamma, x)
    symbols = obs_mask.dim() == 2
    frames = frame_mask(obs_mask, symbols)
    gamma = gamma * frames.unsqueeze(-1).to(gamma.dtype)
    if not symbols and not bool((obs_mask == frames.unsqueeze(-1)).all()):
        return emission.masked_statistics(gamma, x, obs_mask)
    return emission.expected_statistics(gamma, x)


def weighted_recursion(run, weight):
    """``(log_prob, gamma, trans)`` of the recursion ``run(index)`` (on the sequences
    ``index``, returning per-sequence ``log_prob``, ``gamma`` and summed pairwise
    ``trans``) with sequence ``b``'s results multiplied by ``weight[b]``: one run per
    distinct weight (the pairwise counts come summed over the sequences of a run)."""
    values, group = torch.unique(weight, return_inverse=True)
    log_prob = gamma = trans = None
    for g, w in enumerate(values):
        index = (group == g).nonzero().squeeze(-1)
        lp, gm, tr = run(index)
        if log_prob is None:
            log_prob = lp.new_zeros(weight.shape[0])
            gamma = gm.new_zeros((weight.shape[0],) + tuple(gm.shape[1:]))
            trans = torch.zeros_like(tr)
        log_prob[index] = w * lp
        gamma[index] = w * gm
        trans = trans + w * tr
    return log_prob, gamma, trans


def observe_step(emission, t, z, x, obs_mask, labels):
    """Step ``t`` of the chain's Pyro model with the partial observation: the label
    factor :math:`\\log \\mathbb 1[z_t = l_t]` where known, and the emission observed on
    the frames (and dimensions) that ``obs_mask`` keeps."""
    if labels is not None:
        clamp = po.label_clamp(labels[:, t], emission.num_states, emission.dtype)
        pyro.factor(f"label_{t}", clamp[torch.arange(x.shape[0]), z])
    if obs_mask is None:
        emission.observe(t, z, x[:, t])
        return
    mask_t = obs_mask[:, t]
    frames = mask_t if mask_t.dim() == 1 else mask_t.any(-1)
    with poutine.mask(mask=frames):
        if mask_t.dim() == 2 and not bool((mask_t == frames.unsqueeze(-1)).all()):
            emission.observe_masked(t, z, x[:, t], mask_t)
        else:
            emission.observe(t, z, x[:, t])


def seed_emission(emission, x, lengths, obs_mask, labels, params, init, generator):
    """Starting emission parameters in which each known state seeds its own, by one
    M-step of the emission from: for vector frames with ``init="kmeans++"``, k-means
    seeded by the labelled frames (:func:`~pyroem.models.partial.labelled_kmeans`);
    otherwise the responsibilities of every frame under the emission's own starting
    parameters, renumbered to match the labelled frames and one-hot at them
    (:func:`~pyroem.models.partial.seed_responsibilities`)."""
    K = emission.num_states
    valid = torch.arange(x.shape[1]) < lengths.unsqueeze(-1)
    with torch.no_grad():
        if x.dim() == 3 and init == "kmeans++":  # vector frames: k-means seeded by labels
            seeded = po.labelled_kmeans(imputed(x, lengths, obs_mask)[0][valid],
                                        labels[valid], K, generator)
        else:
            resp = emission_log_prob(emission, x, obs_mask, None).softmax(-1)[valid]
            seeded = po.seed_responsibilities(resp, labels[valid])
        gamma = seeded.new_zeros(valid.shape + (K,))
        gamma[valid] = seeded
        emission.maximize(emission_statistics(emission, gamma, x, obs_mask), params)


def prepare(model, x, lengths, obs_mask, labels, sample_weight, dtype):
    """The chain's arguments ``(padded, lengths[, obs_mask, labels, sample_weight])``
    (trailing ``None`` dropped) and the data's form."""
    if obs_mask is not None:
        x, obs_mask = fill_missing(x, obs_mask)
    padded, lens, form = model.emission.pack(x, lengths, dtype)
    symbols = padded.dim() == 2
    if obs_mask is not None:
        obs_mask = pack_mask(obs_mask, lengths, padded, lens, symbols)
    if labels is not None:
        labels = pack_labels(labels, lengths, model.num_states, padded, lens)
    if sample_weight is not None:
        wdtype = padded.dtype if padded.is_floating_point() else (dtype or model.dtype)
        sample_weight = po.check_sample_weight(sample_weight, padded.shape[0], wdtype,
                                               per="sequence")
    return po.trim(padded, lens, obs_mask, labels, sample_weight), form


def _unpack(args):
    return args + (None,) * (5 - len(args))


def _seen(x, lengths, obs_mask, labels):
    """``(B, T)``: frames inside the sequence with an observed value or a label."""
    seen = torch.arange(x.shape[1]) < lengths.unsqueeze(-1)
    if obs_mask is not None:
        observed = frame_mask(obs_mask, x.dim() == 2)
        seen = seen & (observed if labels is None else observed | (labels >= 0))
    return seen


def num_frames(*args):
    """The data items of a fit: frames with an observed value or a label, each counted
    with its sequence's weight."""
    x, lengths, obs_mask, labels, weight = _unpack(args)
    seen = _seen(x, lengths, obs_mask, labels)
    if weight is None:
        return int(seen.sum())
    return float((seen.sum(-1).to(weight.dtype) * weight).sum())


def check_observed(*args):
    """Refuse a fit on a sequence with nothing observed (no value, no label): it would
    inform only the start and transition probabilities through their own prior, not
    count for nothing; drop it (or give it a zero ``sample_weight``)."""
    x, lengths, obs_mask, labels, weight = _unpack(args)
    empty = ~_seen(x, lengths, obs_mask, labels).any(-1)
    if weight is not None:
        empty = empty & (weight > 0)
    if bool(empty.any()):
        b = int(empty.nonzero()[0])
        raise ValueError(f"sequence {b} has no observed value and no label (obs_mask is "
                         "False on all its frames): drop it or give it sample_weight 0")


def imputed(x, lengths, obs_mask):
    """``(x, lengths)`` for an emission's initialisation: vector frames with each missing
    value replaced by its dimension's observed mean (symbols as they are)."""
    if obs_mask is None or x.dim() == 2:
        return x, lengths
    valid = (torch.arange(x.shape[1]) < lengths.unsqueeze(-1)).unsqueeze(-1)
    keep = obs_mask & valid
    mean = (x * keep).sum((0, 1)) / keep.sum((0, 1)).clamp_min(1)
    return torch.where(obs_mask, x, mean), lengths



def run_chain(chain, log_emit, lengths, hard, weight, params=None):
    """The chain's recursion on the emission log-densities: ``(log_prob, gamma, xi)`` of
    forward-backward (Viterbi with ``hard``), with each sequence's results multiplied by
    its ``weight`` when given (:func:`weighted_recursion`); ``params`` is
    ``(log_start, trans)`` where the caller has read them already."""
    if params is None:
        params = chain.start_probs.detach().log(), chain.trans_probs.detach()
    log_start, trans = params

    def run(index):
        if hard:
            log_prob, path = viterbi(log_start, trans.log(), log_emit[index], lengths[index],
                                     chain.final_states, chain.block_length)
            return (log_prob,) + path_statistics(path, chain.num_states, log_emit.dtype)
        return forward_backward(log_start, trans, log_emit[index], lengths[index],
                                chain.final_states, chain.block_length)

    return run(slice(None)) if weight is None else weighted_recursion(run, weight)

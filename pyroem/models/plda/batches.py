r"""
PLDA over batches of ``(embeddings, labels)``, a speaker possibly spread over several
batches (or several processes).

PLDA's E-step reads the data only through its summary (:mod:`~pyroem.models.plda.summary`):
the counts :math:`n_s`, the speaker means :math:`\bar x_s` and the pooled within-speaker
scatter :math:`W = \sum_s \sum_i (x_{si} - \bar x_s)(x_{si} - \bar x_s)^\top`. One pass
accumulates, about one origin :math:`o` (the first batch's mean), the per-speaker counts
and sums :math:`t_s = \sum_i (x_{si} - o)` and the total second moment
:math:`S = \sum_{s,i} (x_{si} - o)(x_{si} - o)^\top`; then exactly

.. math::

    \bar x_s - o = t_s / n_s, \qquad W = S - \sum_s t_s t_s^\top / n_s .

EM then iterates on that summary, which is all the data EM would read in memory: the fit
equals the in-memory fit, and each iteration costs :math:`O(S D^2)` whatever the number
of embeddings. Under ``torch.distributed`` the ranks' label sets are gathered into one
code book and the summaries all-reduced, so a speaker may span ranks too.
"""

import torch

from pyroem.infer import distributed
from pyroem.models.checks import check_matrix
from pyroem.models.plda import summary as summary_module
from pyroem.models.plda.labels import encode_labels


class _Accumulator:
    """Per-speaker counts and sums and the total second moment, about one origin."""

    def __init__(self, dim):
        self.dim = dim
        self.codes = {}  # label -> global code, in order of first appearance
        self.counts = self.sums = self.second = self.origin = None
        self.dtype = None

    def add(self, index, batch):
        try:
            if not (isinstance(batch, (list, tuple)) and len(batch) == 2):
                raise ValueError("a PLDA batch is a pair (embeddings, labels), got "
                                 f"{type(batch).__name__}")
            x = check_matrix(batch[0], self.dim, "embeddings", self.dtype)
            if self.dtype is not None and torch.as_tensor(batch[0]).is_floating_point() \
                    and torch.as_tensor(batch[0]).dtype != self.dtype:
                raise ValueError(f"dtype {torch.as_tensor(batch[0]).dtype} differs from the "
                                 f"first batch's {self.dtype}")
            local, speakers = encode_labels(batch[1])
            if local.shape[0] != x.shape[0]:
                raise ValueError(f"labels must have one entry per embedding: got "
                                 f"{local.shape[0]} labels for {x.shape[0]} embeddings")
        except ValueError as e:
            raise ValueError(f"batch {index}: {e}") from None
        self._accumulate(x, local, speakers)

    def _accumulate(self, x, local, speakers):
        if self.origin is None:
            self.dtype, self.origin = x.dtype, x.mean(0)
            self.counts = x.new_zeros(0)
            self.sums = x.new_zeros(0, self.dim)
            self.second = x.new_zeros(self.dim, self.dim)
        for s in speakers:
            self.codes.setdefault(s, len(self.codes))
        grow = len(self.codes) - self.counts.shape[0]
        if grow:
            self.counts = torch.cat([self.counts, self.counts.new_zeros(grow)])
            self.sums = torch.cat([self.sums, self.sums.new_zeros(grow, self.dim)])
        glob = torch.tensor([self.codes[s] for s in speakers], dtype=torch.long)[local]
        glob = glob.to(x.device)
        xc = x - self.origin
        self.counts.index_add_(0, glob, torch.ones_like(xc[:, 0]))
        self.sums.index_add_(0, glob, xc)
        self.second += xc.T @ xc


def _all_reduce(acc):
    """Every rank's accumulator merged into one code book and summed (exactly)."""
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, list(acc.codes))
    codes = {}
    for labels in gathered:
        for s in labels:
            codes.setdefault(s, len(codes))
    origin = acc.origin.clone()
    torch.distributed.broadcast(origin, src=0)
    delta = acc.origin - origin  # re-express this rank's sums about rank 0's origin
    place = torch.tensor([codes[s] for s in acc.codes], dtype=torch.long).to(acc.counts.device)
    counts = acc.counts.new_zeros(len(codes)).index_add_(0, place, acc.counts)
    sums = acc.sums.new_zeros(len(codes), acc.dim).index_add_(
        0, place, acc.sums + acc.counts.unsqueeze(-1) * delta)
    total = acc.sums.sum(0)
    n = acc.counts.sum()
    outer = total.unsqueeze(-1) * delta.unsqueeze(-2)
    second = acc.second + outer + outer.T + n * torch.outer(delta, delta)
    for t in (counts, sums, second):
        torch.distributed.all_reduce(t)
    acc.codes, acc.origin, acc.counts, acc.sums, acc.second = codes, origin, counts, sums, second


def summarised_arguments(model, source):
    """
    One pass over ``source`` (batches of ``(embeddings, labels)``) and the model
    arguments that stand for the whole data set: embeddings that take no memory (a
    broadcast view; EM reads them only through the summary, registered for them) and
    the ``(N,)`` speaker codes.
    """
    acc = _Accumulator(model.dim)
    error = None
    try:
        count = 0
        for index, batch in enumerate(source):
            acc.add(index, batch)
            count += 1
        if count == 0:
            raise ValueError(f"the batches ({type(source).__name__}) yielded nothing: fit "
                             "needs at least one batch")
    except ValueError as e:
        if not distributed.is_active():
            raise
        error = e
    if distributed.is_active():
        distributed.agree(error, (model.dim, str(acc.dtype)))
        _all_reduce(acc)
    counts, sums = acc.counts, acc.sums
    means = sums / counts.unsqueeze(-1)
    within = acc.second - (sums.T / counts) @ sums
    summary = summary_module._Summary(counts, means, 0.5 * (within + within.T), acc.origin)
    speaker = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device),
                                      counts.long())
    x = acc.origin.new_zeros(()).expand(speaker.shape[0], model.dim)
    _register(x, speaker, summary)
    return x, speaker


def _register(x, speaker, summary):
    """Make :func:`~pyroem.models.plda.summary.data_summary` return ``summary`` for the
    pair ``(x, speaker)`` while both live (the cache it keeps per data tensor)."""
    import weakref
    key = (id(x), id(speaker))
    cache = summary_module._CACHE
    refs = tuple(weakref.ref(t, lambda _, k=key: cache.pop(k, None)) for t in (x, speaker))
    cache[key] = (refs, (x._version, speaker._version), summary)


def scoring_rows(x, chunk_size):
    """Embeddings per chunk of PLDA's scoring (``None``: whole). ``chunk_size=None`` keeps
    ``x`` whole unless it is larger than the memory budget of
    :mod:`pyroem.models.scaling`, then chunks of ``CHUNK_BYTES``."""
    from pyroem.models.scaling import CACHE_BUDGET_BYTES, CHUNK_BYTES, _check_chunk_size
    chunk_size = _check_chunk_size(chunk_size)
    per_row = x.shape[1] * x.element_size()
    if chunk_size is None and x.shape[0] * per_row > CACHE_BUDGET_BYTES:
        chunk_size = max(1, CHUNK_BYTES // per_row)
    return chunk_size if chunk_size is not None and chunk_size < x.shape[0] else None


def _chunks(n, rows):
    return ((start, min(start + rows, n)) for start in range(0, n, rows))


def chunked_summary(x, speaker, rows):
    r"""
    :func:`~pyroem.models.plda.summary.data_summary` of ``x`` (codes ``speaker``
    0..S-1) computed in chunks of ``rows`` embeddings, so that no intermediate is
    larger than a chunk: the shift :math:`o = \bar x`, then the speaker sums about it,
    then the within scatter :math:`\sum_i r_i r_i^\top`, :math:`r_i = x_i - o - (\bar
    x_{s_i} - o)`, summed chunk by chunk (the same formula as in one piece).
    """
    n = x.shape[0]
    shift = x.sum(0) / n
    num_speakers = int(speaker.max()) + 1
    counts = torch.bincount(speaker, minlength=num_speakers).to(x.dtype)
    means = x.new_zeros(num_speakers, x.shape[1])
    for a, b in _chunks(n, rows):
        means.index_add_(0, speaker[a:b], x[a:b] - shift)
    means /= counts.unsqueeze(-1)
    within = x.new_zeros(x.shape[1], x.shape[1])
    for a, b in _chunks(n, rows):
        resid = x[a:b] - shift - means[speaker[a:b]]
        within += resid.T @ resid
    return summary_module._Summary(counts, means, within, shift)


def within_quadratic(x, speaker, summary, transform, rows):
    r"""Per speaker :math:`\sum_i \|T (x_i - \bar x_{s_i})\|^2` in chunks of ``rows``."""
    quad = x.new_zeros(summary.counts.shape[0])
    for a, b in _chunks(x.shape[0], rows or x.shape[0]):
        resid = (x[a:b] - summary.shift - summary.means[speaker[a:b]]) @ transform.T
        quad.index_add_(0, speaker[a:b], resid.square().sum(-1))
    return quad


def summarised_view(x, speaker, summary):
    """Arguments that stand for ``(x, speaker)`` in PLDA's E-step: a broadcast view that
    takes no memory, with ``summary`` registered for it."""
    view = summary.shift.new_zeros(()).expand(x.shape[0], x.shape[1])
    _register(view, speaker, summary)
    return view, speaker

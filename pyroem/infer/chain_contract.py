r"""
A contraction for factor graphs that are one first-order chain, as a ``pyro.markov`` loop
writes them: the same result as :func:`pyro.ops.contract.contract_to_tensor`, by one
vectorised forward recursion instead of the general variable elimination.

The enumerated variables :math:`z_1, \dots, z_n` (in trace order) form a chain when
every log-factor involves either one of them, :math:`u_t(z_t)`, or two consecutive
ones, :math:`p_t(z_{t-1}, z_t)`, and all the variables sit in the same plates (the
chain's batch; a factor inside further plates, e.g. an emission per tone, is first
multiplied over those, as ``contract_to_tensor`` does). Then

.. math::

    a_1 = u_1, \qquad
    a_t(j) = \log \sum_i \exp\big(a_{t-1}(i) + p_t(i, j)\big) + u_t(j), \qquad
    \log Z = \sum_{\text{batch}} \log \sum_k \exp a_n(k),

with :math:`n` steps that each act on the whole batch (a handful of small tensor ops
where the general contraction plans and runs an einsum per variable). With ``max`` in
place of ``logsumexp`` it is the max-product (Viterbi) value. It is differentiable, so
the E-step's backward pass gives every factor's marginal as before (forward-backward is
backprop); a factor graph of any other shape (factorial, higher-order, a variable shared
across chains, a global latent) is left to the general contraction.
"""

import torch


def _symbols(term):
    return term._pyro_dims


def chain_order(log_factors, sum_dims, enum_symbols):
    """The enumeration symbols in chain order, and for each term ``(position, pair)``,
    or ``None`` when the factor graph is not one first-order chain of at least two
    variables with at least one pair factor.

    :param list enum_symbols: the symbols of the enumerated sites in trace order.
    """
    position = {s: i for i, s in enumerate(enum_symbols) if s in sum_dims}
    if len(position) < 2 or len(position) != len(sum_dims):
        return None
    placed, pairs = [], 0
    for terms in log_factors.values():
        for term in terms:
            steps = sorted(position[s] for s in _symbols(term) if s in position)
            if len(steps) == 1:
                placed.append((term, steps[0], False))
            elif len(steps) == 2 and steps[1] == steps[0] + 1:
                placed.append((term, steps[1], True))
                pairs += 1
            else:
                return None
    return placed if pairs else None


def _aligned(term, batch, enum, sizes):
    """``term`` as a tensor ``batch + enum`` (plates of the term beyond the batch summed,
    i.e. their factors multiplied), broadcast to the full sizes."""
    dims = _symbols(term)
    extra = [i for i, s in enumerate(dims) if s not in batch and s not in enum]
    if extra:
        term_t = term.sum(extra)
        dims = "".join(s for i, s in enumerate(dims) if i not in extra)
    else:
        term_t = term
    order = [s for s in batch + enum if s in dims]
    term_t = term_t.permute([dims.index(s) for s in order])
    shape = [sizes[s] if s in dims else 1 for s in batch + enum]
    # a plate of size 1 has no dim in packed tensors: sizes.get(..., 1)
    return term_t.reshape(shape).expand([sizes.get(s, 1) for s in batch + enum])


def chain_contract(log_factors, sum_dims, enum_symbols, batch, hard=False):
    r"""
    :math:`\log Z` (or the max-product value with ``hard``) of a factor graph that is one
    first-order chain (:func:`chain_order`), summed over the batch; ``None`` when it is
    not one (then use :func:`~pyro.ops.contract.contract_to_tensor`).

    :param OrderedDict log_factors: packed log-factors by plate ordinal, as for
        ``contract_to_tensor``.
    :param set sum_dims: the enumeration symbols to sum out.
    :param list enum_symbols: the enumerated sites' symbols in trace order.
    :param frozenset batch: the plate symbols of the enumerated sites, or ``None`` when
        they are not all in the same plates (then it is not one chain).
    """
    if batch is None or any(not batch <= ordinal for ordinal in log_factors):
        return None  # a factor outside the chain's plates couples its batch entries
    placed = chain_order(log_factors, sum_dims, enum_symbols)
    if placed is None:
        return None
    batch = sorted(batch)
    sizes = {}
    for terms in log_factors.values():
        for term in terms:
            sizes.update(zip(_symbols(term), term.shape))
    chain = [s for s in enum_symbols if s in sum_dims]
    unary = [None] * len(chain)
    pair = [None] * len(chain)
    for term, step, is_pair in placed:
        enum = [chain[step - 1], chain[step]] if is_pair else [chain[step]]
        aligned = _aligned(term, batch, enum, sizes)
        table = pair if is_pair else unary
        table[step] = aligned if table[step] is None else table[step] + aligned
    reduce = (lambda t, dim: t.max(dim).values) if hard else torch.logsumexp
    a = unary[0] if unary[0] is not None else _zeros(sizes, batch, chain[0], placed)
    for t in range(1, len(chain)):
        if pair[t] is not None:
            a = reduce(a.unsqueeze(-1) + pair[t], -2)
        else:  # independent of the step before: its total factors out
            a = reduce(a, -1).unsqueeze(-1).expand(a.shape[:-1] + (sizes[chain[t]],))
        if unary[t] is not None:
            a = a + unary[t]
    return reduce(a, -1).sum()


def _zeros(sizes, batch, symbol, placed):
    term = placed[0][0]
    return term.new_zeros([sizes.get(s, 1) for s in batch] + [sizes[symbol]])

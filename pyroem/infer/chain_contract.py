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


def _chain_positions(sites):
    """``{enumeration id: step}`` of the enumerated sites in trace order and their
    common number of values, or ``None`` (fewer than two, or sizes that differ)."""
    position, size = {}, None
    for site in sites:
        dim = site["infer"].get("_enumerate_dim")
        if dim is None:
            continue
        value = site["value"]
        if value.dim() < -dim or size not in (None, value.shape[dim]):
            return None
        size = value.shape[dim]
        position[site["infer"]["_dim_to_id"][dim]] = len(position)
    return (position, size) if len(position) >= 2 else None


def _placement(members, shape, position):
    """Where the factors ``members`` (repeats: one log-prob ``shape``) sit in the chain:
    ``(steps, pair, flip)`` with ``steps`` the step of each one's last variable, ``pair``
    whether they involve two consecutive variables, ``flip`` whether the later variable
    is the left one of their two dims; ``None`` when they do not fit a first-order
    chain (a plate, a mask, another variable, steps further apart)."""
    depends = [d for d in range(-len(shape), 0) if shape[d] > 1]
    if len(depends) not in (1, 2):
        return None
    steps, flips = [], set()
    for site in members:
        if site["mask"] is not None or any(f.vectorized for f in site["cond_indep_stack"]):
            return None
        ids = site["infer"].get("_dim_to_id", {})
        at = [position.get(ids.get(d)) for d in depends]
        if None in at:
            return None
        if len(at) == 2:
            if abs(at[0] - at[1]) != 1:
                return None
            flips.add(at[0] > at[1])
        steps.append(max(at))
    if len(flips) > 1:
        return None
    return steps, len(depends) == 2, bool(flips and flips.pop())


def grouped_chain_contract(sites, groups, hard=False):
    r"""
    :math:`\log Z` of the factors ``sites`` when they form one first-order chain outside
    any plate (a plain ``pyro.markov`` loop), from the factors stacked by kind
    (:class:`~pyroem.infer.repeats.SiteGroup`): the unary factors :math:`u_t` and the pair
    factors :math:`p_t` are scattered into ``(n, K)`` and ``(n, K, K)`` tables by one
    ``index_add`` per kind, then the recursion of this module runs on the tables.

    :returns: ``(log_z, units)`` with ``units`` a list of ``(sites, leaf)``: the leaves
        (stacked log-probs, requiring grad) whose gradients are the marginals; or ``None``
        when the factors are not such a chain (then :func:`chain_contract` or the general
        contraction applies).
    """
    found = _chain_positions(sites)
    if found is None:
        return None
    position, size = found
    names = {s["name"] for s in sites}
    # a group's members share one log-prob shape, so all or none of them are in the chain
    groups = [g for g in groups if g.log_prob is not None and g.sites[0]["name"] in names]
    grouped = {s["name"] for g in groups for s in g.sites}
    units = [(g.sites, g.log_prob) for g in groups]
    units += [([s], s["unscaled_log_prob"].unsqueeze(0)) for s in sites
              if s["name"] not in grouped]
    n = len(position)
    placed = []
    for members, log_prob in units:
        where = _placement(members, log_prob.shape[1:], position)
        if where is None:
            return None
        placed.append((members, log_prob.detach().requires_grad_(), where))
    dtype = placed[0][1].dtype
    unary = placed[0][1].new_zeros(n, size)
    pair = placed[0][1].new_zeros(n, size, size)
    for _, leaf, (steps, is_pair, flip) in placed:
        index = torch.tensor(steps)
        table = leaf.reshape((len(steps), size, size) if is_pair else (len(steps), size))
        if is_pair:
            pair = pair.index_add(0, index, table.transpose(1, 2) if flip else table)
        else:
            unary = unary.index_add(0, index, table)
    log_z = _recursion(unary.unbind(0), pair.unbind(0), hard)
    return log_z.to(dtype), [(members, leaf) for members, leaf, _ in placed]


def _recursion(unary, pair, hard):
    r""":math:`a_t(j) = \log \sum_i \exp(a_{t-1}(i) + p_t(i, j)) + u_t(j)` (``max`` with
    ``hard``), :math:`\log Z = \log \sum_j \exp a_n(j)`; ``pair[0]`` is unused."""
    reduce = (lambda t, dim: t.max(dim).values) if hard else torch.logsumexp
    a = unary[0]
    for t in range(1, len(unary)):
        a = reduce(a.unsqueeze(-1) + pair[t], -2) + unary[t]
    return reduce(a, -1)

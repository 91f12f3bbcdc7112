r"""
The exact E-step of a plain first-order chain (a ``pyro.markov`` loop in no plate) on
its factors stacked by kind (:class:`~pyroem.infer.repeats.SiteGroup`), instead of one
tensor per site.

With :math:`z_1, \dots, z_n` the enumerated variables in trace order, all with ``K``
values, every factor is unary, :math:`u_t(z_t)`, or a pair of consecutive variables,
:math:`p_t(z_{t-1}, z_t)`. Each kind of factor (one group of repeats) is scattered into
the tables ``u (n, K)`` and ``p (n, K, K)`` by one ``index_add``, and the recursions run
on the tables:

.. math::

    \alpha_1 = u_1, \quad
    \alpha_t(j) = \log \sum_i e^{\alpha_{t-1}(i) + p_t(i, j)} + u_t(j), \quad
    \beta_n = 0, \quad
    \beta_{t-1}(i) = \log \sum_j e^{p_t(i, j) + u_t(j) + \beta_t(j)},

:math:`\log Z = \log \sum_j e^{\alpha_n(j)}`, and the marginal of every factor is
:math:`\gamma_t = e^{\alpha_t + \beta_t - \log Z}` (a unary one) or
:math:`\xi_t(i, j) = e^{\alpha_{t-1}(i) + p_t(i, j) + u_t(j) + \beta_t(j) - \log Z}`
(a pair), gathered back per kind. With ``hard`` the sums are maxima and the marginals
the gradient of the max-product value (one-hot on the best path).
"""

import torch


def _chain_positions(sites):
    """``{enumeration id: step}`` of the enumerated sites in trace order and their
    common number of values, or ``None`` (fewer than two, or sizes that differ)."""
    position, size = {}, None
    for site in sites:
        dim = site["infer"].get("_enumerate_dim")
        if dim is None:
            continue
        value, ident = site["value"], site["infer"].get("_dim_to_id", {}).get(dim)
        if ident is None or value.dim() < -dim or size not in (None, value.shape[dim]):
            return None
        size = value.shape[dim]
        position[ident] = len(position)
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


def _units(sites, groups, position):
    """``[(members, stacked log-probs, placement)]`` for the groups of repeats among
    ``sites`` and each other site alone, or ``None`` when one does not fit the chain."""
    names = {s["name"] for s in sites}
    # a group's members share one log-prob shape, so all or none of them are in the chain
    groups = [g for g in groups if g.log_prob is not None and g.sites[0]["name"] in names]
    grouped = {s["name"] for g in groups for s in g.sites}
    units = [(g.sites, g.log_prob) for g in groups]
    units += [([s], s["unscaled_log_prob"].unsqueeze(0)) for s in sites
              if s["name"] not in grouped]
    placed = []
    for members, log_prob in units:
        where = _placement(members, log_prob.shape[1:], position)
        if where is None:
            return None
        placed.append((members, log_prob.detach(), where))
    return placed


def _tables(placed, n, size):
    """The chain's ``(n, K)`` unary and ``(n, K, K)`` pair log-factor tables."""
    like = placed[0][1]
    unary, pair = like.new_zeros(n, size), like.new_zeros(n, size, size)
    for _, log_prob, (steps, is_pair, flip) in placed:
        index = torch.tensor(steps, device=like.device)
        if is_pair:
            table = log_prob.reshape(len(steps), size, size)
            pair = pair.index_add(0, index, table.transpose(1, 2) if flip else table)
        else:
            unary = unary.index_add(0, index, log_prob.reshape(len(steps), size))
    return unary, pair


def stacked_chain_contract(sites, groups, hard=False):
    r"""
    :math:`\log Z` (the max-product value with ``hard``) of the factors ``sites`` when
    they form one first-order chain in no plate, and the marginal of every factor.

    :param list sites: the sample sites that depend on an enumerated variable, with their
        ``unscaled_log_prob``.
    :param list groups: the trace's :class:`~pyroem.infer.repeats.SiteGroup` s.
    :returns: ``(log_z, [(members, marginals)])``: per group of repeats (or single
        site) its marginals stacked like its log-probs; ``None`` when the factors are not
        such a chain (then the packed contraction applies).
    """
    found = _chain_positions(sites)
    if found is None:
        return None
    position, size = found
    placed = _units(sites, groups, position)
    if placed is None:
        return None
    unary, pair = _tables(placed, len(position), size)
    if hard:
        return _max_product(placed, unary, pair)
    log_z, gamma, xi = _forward_backward(unary, pair)
    out = []
    for members, log_prob, (steps, is_pair, flip) in placed:
        index = torch.tensor(steps, device=log_prob.device)
        if is_pair:
            marginal = xi[index].transpose(1, 2) if flip else xi[index]
        else:
            marginal = gamma[index]
        out.append((members, marginal.reshape(log_prob.shape)))
    return log_z, out


def _smallest_norm(dtype):
    """The smallest per-step normaliser the scaled recursion accepts (the square root of
    the dtype's smallest normal number); below it (the scaled factors underflow) the
    log-space recursion is used instead."""
    return torch.finfo(dtype).tiny ** 0.5


def _forward_backward(unary, pair):
    """``log Z``, the unary marginals ``(n, K)`` and the pair marginals ``(n, K, K)``
    (entry 0 unused) of the chain: scaled recursions in probability space (each table
    divided by its maximum, each step's message normalised), or in log space when a
    scaled step underflows."""
    c = pair.amax((-2, -1), keepdim=True).clamp_min(torch.finfo(pair.dtype).min)
    m = unary.amax(-1, keepdim=True).clamp_min(torch.finfo(unary.dtype).min)
    trans, emit = (pair - c).exp(), (unary - m).exp()
    E, e = trans.unbind(0), emit.unbind(0)
    alpha = [e[0] / e[0].sum()]
    norms = [e[0].sum()]
    for t in range(1, len(e)):
        a = (alpha[-1] @ E[t]) * e[t]
        norms.append(a.sum())
        alpha.append(a / norms[-1])
    norms = torch.stack(norms)
    if not bool((norms > _smallest_norm(norms.dtype)).all()) or not bool(
            torch.isfinite(norms).all()):
        return _log_forward_backward(unary, pair)
    beta = [torch.ones_like(e[0])]
    for t in range(len(e) - 1, 0, -1):
        beta.append(E[t] @ (e[t] * beta[-1]) / norms[t])
    alpha, beta = torch.stack(alpha), torch.stack(beta[::-1])
    log_z = norms.log().sum() + m.sum() + c[1:].sum()
    xi = torch.zeros_like(pair)
    xi[1:] = (alpha[:-1].unsqueeze(-1) * trans[1:] * (emit[1:] * beta[1:]).unsqueeze(-2)
              / norms[1:, None, None])
    return log_z, alpha * beta, xi


def _log_forward_backward(unary, pair):
    """As :func:`_forward_backward`, by the log-space recursions of the module."""
    u, p = unary.unbind(0), pair.unbind(0)
    alpha = [u[0]]
    for t in range(1, len(u)):
        alpha.append(torch.logsumexp(alpha[-1].unsqueeze(-1) + p[t], -2) + u[t])
    beta = [torch.zeros_like(u[0])]
    for t in range(len(u) - 1, 0, -1):
        beta.append(torch.logsumexp(p[t] + (u[t] + beta[-1]).unsqueeze(-2), -1))
    alpha, beta = torch.stack(alpha), torch.stack(beta[::-1])
    log_z = torch.logsumexp(alpha[-1], -1)
    gamma = (alpha + beta - log_z).exp()
    xi = torch.zeros_like(pair)
    xi[1:] = (alpha[:-1].unsqueeze(-1) + pair[1:] + (unary[1:] + beta[1:]).unsqueeze(-2)
              - log_z).exp()
    return log_z, gamma, xi


def _max_product(placed, unary, pair):
    """The max-product value and its gradient with respect to each unit's log-probs (a
    one-hot marginal on the best path), by autograd through the max recursion."""
    with torch.enable_grad():
        leaves = [log_prob.requires_grad_() for _, log_prob, _ in placed]
        unary, pair = _tables(placed, unary.shape[0], unary.shape[1])
        u, p = unary.unbind(0), pair.unbind(0)
        a = u[0]
        for t in range(1, len(u)):
            a = (a.unsqueeze(-1) + p[t]).max(-2).values + u[t]
        value = a.max(-1).values
        grads = torch.autograd.grad(value, leaves)
    return value.detach(), [(members, g) for (members, _, _), g in zip(placed, grads)]

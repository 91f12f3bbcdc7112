r"""
Figures that make EM visible (matplotlib; headless-safe).

Every figure function draws into the matplotlib ``Axes`` given as ``ax=`` (a pair for the
two-panel figures), or into a new :class:`matplotlib.figure.Figure` built directly (no
``pyplot``, so no GUI backend is needed or changed); it saves the figure when given ``path``
and returns the ``Axes`` (``ax.figure`` is the figure: ``display(ax.figure)`` in a notebook).
Every figure has a title, axes labelled with their units and a legend where it draws more
than one series; series differ by line style and marker as well as colour, so that they
read in grey print. The numbers a figure draws come from functions that return them
(:func:`em_bound_path`, :func:`decomposition_series`, :func:`convergence_series`), so they
can be checked apart from the picture.
"""

import copy
from collections import namedtuple

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from pyroem.infer.decompose import decompose
from pyroem.infer.em import EM
from pyroem.models import gaussian_emission as ge

EMBoundPath = namedtuple(
    "EMBoundPath", ["t", "log_evidence", "bound", "log_evidence_old", "log_evidence_new"])
EMBoundPath.__doc__ = r"""
The curves of the EM-bound figure along :math:`\eta(t)`, :math:`\eta(0) = \eta_{old}`,
:math:`\eta(1) = \eta_{new}`.

:ivar torch.Tensor t: positions on the path (contains 0 and 1).
:ivar torch.Tensor log_evidence: :math:`\log p(X|\eta(t))`.
:ivar torch.Tensor bound: :math:`\mathcal L(q_{old}, \eta(t))` with
    :math:`q_{old} = p(Z|X, \eta_{old})` held fixed.
:ivar float log_evidence_old: :math:`\log p(X|\eta_{old})`.
:ivar float log_evidence_new: :math:`\log p(X|\eta_{new})`.
"""


def _axes(ax, figsize, count=1, **subplots):
    """``(axes, new)``: the given Axes, or those of a new figure (``new`` is then True)."""
    if ax is not None:
        if count > 1 and len(ax) != count:
            raise ValueError(f"ax must be a sequence of {count} Axes, got {len(ax)}")
        return ax, False
    fig = Figure(figsize=figsize)
    return (fig.subplots(1, count, **subplots) if count > 1 else fig.add_subplot()), True


def _finish(ax, path, new):
    fig = (ax[0] if isinstance(ax, (list, tuple)) or hasattr(ax, "shape") else ax).figure
    if new:
        fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return ax


def _model_param_names(model, args):
    """Names of the parameters :math:`\\eta` the model (not the guide) reads."""
    from pyro import poutine

    with torch.no_grad(), poutine.block(hide_types=["sample"]):
        trace = poutine.trace(model.model).get_trace(*args)
    return [name for name, site in trace.nodes.items() if site["type"] == "param"]


def _unconstrained(module, name):
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    return getattr(module, leaf + "_unconstrained")


def em_bound_path(model, *data, num_points=61, t_range=(-0.75, 2.0)):
    r"""
    The numbers of the textbook EM figure (Bishop, 2006, fig. 9.14): one EM step from
    the model's current parameters :math:`\eta_{old}` to :math:`\eta_{new}`, and along the
    line :math:`\eta(t) = \eta_{old} + t(\eta_{new} - \eta_{old})` (in the parameters'
    unconstrained coordinates, so every point is a valid model) the evidence
    :math:`\log p(X|\eta(t))` and the lower bound

    .. math:: \mathcal L(q_{old}, \eta(t)) = \log p(X|\eta(t))
              - \mathrm{KL}\big(q_{old} \| p(Z|X, \eta(t))\big), \qquad
              q_{old} = p(Z|X, \eta_{old}).

    The bound lies below the evidence everywhere, touches it at :math:`t = 0` and (with
    an exact M-step, ``reg_covar=0``) is largest on the path at :math:`t = 1`.

    :param model: a built-in model (:class:`~pyroem.models.EMModel`); left as it was
        (its state is restored).
    :param data: its data.
    :param int num_points: grid points on the path (0 and 1 are always added).
    :param tuple t_range: the ends of the path.
    :returns: an :class:`EMBoundPath`.
    """
    saved = copy.deepcopy(model.state_dict())  # the model is left as it was
    try:
        return _bound_path(model, model.prepare(*data), num_points, t_range)
    finally:
        model.load_state_dict(saved)


def _bound_path(model, args, num_points, t_range):
    names = _model_param_names(model, args)
    em = EM(model.model, model.guide, max_plate_nesting=model.max_plate_nesting)
    old = {n: _unconstrained(model, n).detach().clone() for n in names}
    with torch.no_grad():
        posterior = em.e_step(*args)  # q_old, written into the guide and kept fixed
    em.run_m_step(posterior, *args)
    new = {n: _unconstrained(model, n).detach().clone() for n in names}
    t = torch.linspace(float(t_range[0]), float(t_range[1]), int(num_points), dtype=torch.float64)
    t = torch.cat([t, torch.tensor([0.0, 1.0], dtype=torch.float64)]).unique()  # sorted
    log_evidence, bound = [], []
    for ti in t.tolist():
        with torch.no_grad():
            for n in names:
                _unconstrained(model, n).data.copy_(old[n] + ti * (new[n] - old[n]))
        d = decompose(model.model, model.guide, *args, max_plate_nesting=model.max_plate_nesting)
        log_evidence.append(d.log_evidence)
        bound.append(d.elbo)
    log_evidence = torch.tensor(log_evidence, dtype=torch.float64)
    i_old, i_new = int((t == 0).nonzero()), int((t == 1).nonzero())
    return EMBoundPath(t, log_evidence, torch.tensor(bound, dtype=torch.float64),
                       float(log_evidence[i_old]), float(log_evidence[i_new]))


def plot_em_bound(model, *data, path=None, num_points=61, t_range=(-0.75, 2.0), bound=None,
                  ax=None):
    r"""
    Figure (a): :math:`\log p(X|\eta)` and the bound :math:`\mathcal L(q_{old}, \eta)`
    along a line through :math:`\eta_{old}` and :math:`\eta_{new}`, touching at
    :math:`\eta_{old}`, with the M-step's move to the bound's maximum :math:`\eta_{new}`.

    :param bound: an :class:`EMBoundPath` already computed (else computed here).
    :param str path: save the figure there.
    :param ax: a matplotlib ``Axes`` to draw into (else a new figure).
    :returns: the ``Axes``.
    """
    b = em_bound_path(model, *data, num_points=num_points, t_range=t_range) if bound is None else bound
    ax, new = _axes(ax, (6.4, 4.4))
    ax.plot(b.t, b.log_evidence, color="tab:red", lw=2, label=r"$\log p(X|\eta)$")
    ax.plot(b.t, b.bound, color="tab:blue", lw=2, ls="--",
            label=r"$\mathcal{L}(q_{old}, \eta)$, $q_{old} = p(Z|X,\eta_{old})$")
    i_new = int((b.t == 1).nonzero())
    ax.axvline(0.0, color="grey", ls=":", lw=1)
    ax.axvline(1.0, color="grey", ls=":", lw=1)
    ax.plot([0.0], [b.log_evidence_old], "o", color="black")
    ax.plot([1.0], [float(b.bound[i_new])], "o", color="tab:blue")
    ax.plot([1.0], [b.log_evidence_new], "o", color="tab:red")
    ax.annotate("", xy=(1.0, float(b.bound[i_new])), xytext=(0.0, b.log_evidence_old),
                arrowprops=dict(arrowstyle="->", color="black"))
    ax.annotate("E-step: bound touches", (0.0, b.log_evidence_old), textcoords="offset points",
                xytext=(-10, -28), ha="right", fontsize=8)
    ax.annotate("M-step: max of bound", (1.0, float(b.bound[i_new])), textcoords="offset points",
                xytext=(8, -22), fontsize=8)
    ax.set_xticks([0.0, 1.0])
    ax.set_xticklabels([r"$\eta_{old}$", r"$\eta_{new}$"])
    ax.set_xlabel(r"parameters along $\eta(t) = \eta_{old} + t\,(\eta_{new} - \eta_{old})$")
    ax.set_ylabel("log-likelihood (nats)")
    lo = float(b.log_evidence.min())
    span = float(b.log_evidence.max()) - lo
    ax.set_ylim(lo - 0.5 * span, float(b.log_evidence.max()) + 0.15 * span)
    ax.legend(loc="lower center", fontsize=8)
    ax.set_title("EM maximises a lower bound that touches the evidence at $\\eta_{old}$")
    return _finish(ax, path, new)


def convergence_series(history):
    r"""
    ``(iterations, seconds, log_evidence)`` of a history, aligned: entry ``i`` is the
    exact :math:`\log p(X)` of the parameters after ``i`` iterations and the seconds
    spent to reach them (``0`` for the start). Uses ``records["log_evidence"]`` when
    recorded (for Viterbi the true evidence), else ``log_likelihood``; the final
    parameters' value is appended when known.
    """
    ll = list(history.records.get("log_evidence", history.log_likelihood))
    secs = [0.0] + list(history.seconds[: len(ll) - 1])
    if history.method == "viterbi" and history.records.get("m_step"):
        final = history.records["m_step"][-1].log_evidence
    elif history.method != "viterbi":
        final = history.final_log_likelihood
    else:
        final = None
    if final is not None and len(history.seconds) >= len(ll) and ll:
        ll.append(final)
        secs.append(history.seconds[len(ll) - 2])
    return (torch.arange(len(ll)), torch.tensor(secs, dtype=torch.float64),
            torch.tensor(ll, dtype=torch.float64))


_STYLES = {"em": ("tab:red", "-", "o"), "viterbi": ("tab:green", "--", "s"),
           "svi": ("tab:blue", "-.", "^")}


def _style(label, i):
    """Colour, line style and marker of a method: distinct in grey print too."""
    return _STYLES.get(label, (f"C{i + 3}", (0, (1, 1)), "dv<>ph"[i % 6]))


def plot_convergence(histories, path=None, num_items=None, ax=None):
    r"""
    Figure (b): :math:`\log p(X)` of several methods (e.g. from
    :func:`~pyroem.infer.compare`) against iterations and against wall-clock seconds,
    both on logarithmic axes (EM's tens of iterations and SVI's hundreds of steps then
    show side by side). Viterbi's own objective :math:`\log p(X, \hat Z)` is drawn dotted.

    :param dict histories: ``{label: History}``.
    :param int num_items: divide by it to plot nats per item.
    :param ax: a pair of matplotlib ``Axes`` (iterations, seconds) to draw into.
    :returns: the pair of ``Axes``.
    """
    if not histories:
        raise ValueError("histories is empty")
    scale = 1.0 / num_items if num_items else 1.0
    (ax_it, ax_s), new = _axes(ax, (10, 4), count=2, sharey=True)
    for i, (label, hist) in enumerate(histories.items()):
        iters, secs, ll = convergence_series(hist)
        color, ls, marker = _style(label, i)
        every = max(1, len(ll) // 12)
        ax_it.plot(iters + 1, ll * scale, color=color, ls=ls, marker=marker, ms=4,
                   markevery=every, label=f"{label}: log p(X)")
        ax_s.plot(secs, ll * scale, color=color, ls=ls, marker=marker, ms=4, markevery=every,
                  label=label)
        if "log_evidence" in hist.records and hist.method == "viterbi":
            own = torch.tensor(hist.log_likelihood, dtype=torch.float64) * scale
            ax_it.plot(iters[: len(own)] + 1, own, color=color, ls=":",
                       label=f"{label}: log p(X, Z_hat)")
    ax_it.set_xscale("log")
    ax_s.set_xscale("symlog", linthresh=_first_positive(ax_s))
    ax_s.set_xlim(left=0.0)
    ax_it.set_xlabel("iteration + 1 (log scale; 1 = the start)")
    for axis in (ax_it, ax_s):  # the y axis is shared; a label on each panel all the same
        axis.set_ylabel("log p(X) per item (nats)" if num_items else "log p(X) (nats)")
    ax_s.set_xlabel("wall-clock time (s, log scale beyond the first step)")
    ax_it.legend(fontsize=8)
    ax_s.legend(fontsize=8)
    ax_it.set_title("convergence against iterations")
    ax_s.set_title("convergence against wall-clock time")
    return _finish((ax_it, ax_s), path, new)


def _first_positive(ax):
    """The smallest positive time drawn: below it the time axis is linear (it holds 0)."""
    times = [t for line in ax.lines for t in line.get_xdata() if t > 0]
    return min(times) if times else 1.0


def plot_mixture(gmm, x, path=None, num_std=(1.0, 2.0), ax=None, labels=("x[0]", "x[1]")):
    r"""
    Figure (c): 2-D data coloured by their responsibilities
    :math:`r_{nk} = p(z_n = k|x_n)` (each point's colour is the :math:`r`-weighted mix of
    the component colours) and each component's covariance ellipses at ``num_std``
    standard deviations.

    :param gmm: a fitted :class:`~pyroem.models.GaussianMixture` with ``dim=2``.
    :param x: data of shape ``(N, 2)``.
    :param ax: a matplotlib ``Axes`` to draw into (else a new figure).
    :param labels: the two axes' labels, with their units (e.g.
        ``("eruption (min)", "waiting (min)")``).
    :returns: the ``Axes``.
    """
    if gmm.dim != 2:
        raise ValueError(f"plot_mixture draws 2-D mixtures only, got dim={gmm.dim}")
    (x,) = gmm.prepare(x)
    resp = gmm.posterior(x).double()
    palette = torch.tensor([(0.84, 0.15, 0.16), (0.12, 0.47, 0.71), (0.17, 0.63, 0.17),
                            (1.0, 0.5, 0.05), (0.58, 0.4, 0.74), (0.55, 0.34, 0.29),
                            (0.89, 0.47, 0.76), (0.5, 0.5, 0.5), (0.74, 0.74, 0.13),
                            (0.09, 0.75, 0.81)], dtype=torch.float64)
    K = gmm.num_components
    base = palette[torch.arange(K) % len(palette)]
    colors = (resp @ base).clamp(0, 1)
    ax, new = _axes(ax, (6, 5))
    ax.scatter(x[:, 0].double(), x[:, 1].double(), c=colors.numpy(), s=12, lw=0)
    covs = ge.full_covariances(gmm.covariances, gmm.covariance_type, (gmm.num_components,),
                               gmm.dim).double()
    means = gmm.means.detach().double()
    weights = gmm.weights.detach().double()
    for k in range(K):
        evals, evecs = torch.linalg.eigh(covs[k])
        angle = float(torch.rad2deg(torch.atan2(evecs[1, -1], evecs[0, -1])))
        for n in num_std:
            width, height = 2 * n * evals.flip(0).clamp_min(0).sqrt()
            ax.add_patch(Ellipse(means[k].tolist(), float(width), float(height), angle=angle,
                                 fill=False, color=base[k].tolist(), lw=2 if n == num_std[0] else 1))
        ax.plot(*means[k].tolist(), "x", color="black", label="component means" if k == 0 else None)
        ax.annotate(f"{float(weights[k]):.2f}", means[k].tolist(), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_title(f"{K}-component mixture: ellipses at {', '.join(f'{n:g}' for n in num_std)} sd, "
                 "points coloured by responsibility", fontsize=9)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend(fontsize=8, loc="best")
    ax.autoscale_view()
    return _finish(ax, path, new)


def decomposition_series(history):
    r"""
    The per-iteration decomposition recorded by ``fit(..., record_decomposition=True)``,
    interleaved after each E-step (at ``i``) and each M-step (at ``i + 0.5``).

    :returns: ``(steps, log_evidence, elbo, kl)`` tensors, ``elbo + kl == log_evidence``.
    """
    e, m = history.records.get("e_step"), history.records.get("m_step")
    if not e or not m:
        raise ValueError("the history has no decomposition: fit with record_decomposition=True "
                         "and method='em' or 'viterbi'")
    steps, rows = [], []
    for i, (de, dm) in enumerate(zip(e, m)):
        steps += [float(i), i + 0.5]
        rows += [de, dm]
    t = torch.tensor(steps, dtype=torch.float64)
    col = [torch.tensor([getattr(d, f) for d in rows], dtype=torch.float64)
           for f in ("log_evidence", "elbo", "kl")]
    return (t, *col)


def plot_decomposition(history, path=None, ax=None):
    r"""
    Figure (d): :math:`\log p(X) = \mathrm{ELBO}(q, \eta) + \mathrm{KL}(q\|p(Z|X,\eta))`
    after every E-step (KL falls to zero) and every M-step (ELBO and evidence rise, KL
    opens up again).

    :param history: a history from ``fit(..., record_decomposition=True)``.
    :param ax: a pair of matplotlib ``Axes`` (the bound above, the KL below) to draw into.
    :returns: the pair of ``Axes``.
    """
    t, log_evidence, elbo, kl = decomposition_series(history)
    if ax is None:
        fig = Figure(figsize=(7, 5.5))
        ax, new = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]}), True
    else:
        (ax, new) = _axes(ax, None, count=2)
    ax, ax_kl = ax
    ax.plot(t, log_evidence, "-o", color="tab:red", ms=3, label="log p(X)")
    ax.plot(t, elbo, "--s", color="tab:blue", ms=3, label="ELBO(q) = Q + H")
    ax.fill_between(t, elbo, log_evidence, color="tab:orange", alpha=0.4, hatch="//",
                    label="KL(q || p(Z|X))")
    ax.set_ylabel("log-likelihood (nats)")
    ax.legend(fontsize=8)
    ax.set_title("log p(X) = ELBO + KL: the E-step closes the gap, the M-step raises the ELBO",
                 fontsize=9)
    ax_kl.bar(t, kl, width=0.3, color="tab:orange", hatch="//", label="KL(q || p(Z|X))")
    ax_kl.set_ylabel("KL (nats)")
    ax_kl.set_xlabel("iteration (E-step at i, M-step at i + 1/2)")
    ax_kl.set_title("the gap: zero after each E-step", fontsize=9)
    return _finish((ax, ax_kl), path, new)

"""Sequential ``pyro.markov`` chains of every structure the generic contraction handles
stay exact: factorial chains, a second-order chain, chains inside nested plates. Against
brute-force sums over every joint path: the evidence, and for every site the expected
log-factor :math:`E_q[\\log p_f]` that the M-step maximises (which any wrong marginal
would change)."""

import itertools
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from pyro_models import factorial_hmm, masked_hmm, models, second_order_hmm
from torch.distributions import constraints

from pyroem.infer import EM, estep, exact_posterior
from pyroem.infer.chain_contract import chain_contract
from pyroem.infer.mstep import auto, grouping
from pyroem.infer.stacked_chain import stacked_chain_contract

G = torch.Generator().manual_seed(5)
SEQS = (torch.rand(2, 3, 2, generator=G) > 0.5).double()
FULL = torch.tensor([3, 3])  # no padding: brute force needs no mask
X = torch.randn(5, generator=G, dtype=torch.float64)

CASES = [
    ("factorial", factorial_hmm, (SEQS[:1], FULL[:1]), 2,
     {**{f"w_{t}": ((1, 1), 2) for t in range(3)}, **{f"x_{t}": ((1, 1), 2) for t in range(3)}}),
    ("second_order", second_order_hmm, (X,), 0, {f"z_{t}": ((), 2) for t in range(5)}),
    ("chain_in_plates", masked_hmm, (SEQS, FULL), 2, {f"x_{t}": ((2, 1), 2) for t in range(3)}),
]


def brute_force_expectations(model, args, latents):
    """``log p(X)`` and, per site, :math:`E_{p(Z|X)}[\\log p_f]` by enumerating every joint
    assignment."""
    entries = [(n, idx) for n, (shape, _) in latents.items()
               for idx in itertools.product(*[range(s) for s in shape])]
    log_joint, per_site = [], []
    with poutine.block():
        for values in itertools.product(*[range(latents[n][1]) for n, _ in entries]):
            cfg = {n: torch.zeros(shape, dtype=torch.long) for n, (shape, _) in latents.items()}
            for (n, idx), v in zip(entries, values):
                cfg[n][idx] = v
            trace = prune_subsample_sites(
                poutine.trace(poutine.condition(model, data=cfg)).get_trace(*args))
            trace.compute_log_prob()
            sites = {name: s["log_prob_sum"].detach() for name, s in trace.nodes.items()
                     if s["type"] == "sample"}
            per_site.append(sites)
            log_joint.append(sum(sites.values()))
    log_joint = torch.stack(log_joint)
    log_ev = log_joint.logsumexp(0)
    weights = (log_joint - log_ev).exp()
    expected = {name: sum(w * s[name] for w, s in zip(weights, per_site)) for name in per_site[0]}
    return log_ev, expected


@pytest.mark.parametrize("name,model,args,nesting,latents", CASES, ids=[c[0] for c in CASES])
def test_markov_structures_are_exact(name, model, args, nesting, latents):
    pyro.clear_param_store()
    post = exact_posterior(model, *args, max_plate_nesting=nesting)
    log_ev, expected = brute_force_expectations(model, args, latents)
    assert float(post.log_evidence) == pytest.approx(float(log_ev), abs=1e-10)
    for site, value in expected.items():
        node = post.trace.nodes[site]
        table = node["unscaled_log_prob"].detach()
        ours = (post[site] * table).sum()
        assert float(ours) == pytest.approx(float(value), abs=1e-10), site


@pytest.mark.parametrize("name,model,args,nesting,latents", CASES, ids=[c[0] for c in CASES])
def test_markov_structures_em_is_monotone(name, model, args, nesting, latents):
    pyro.clear_param_store()
    em = EM(model, max_plate_nesting=nesting)
    losses = [em.step(*args) for _ in range(4)]
    assert all(b <= a + 1e-10 for a, b in zip(losses, losses[1:])), losses
    assert all(route.startswith("closed-form") for route in em.plan.params.values())


MODELS = models()
# the factor graphs that are one first-order chain (two latents of one item are one too)
CHAINS = {"masked_hmm", "neural_hmm", "two_latents"}


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("name,model,args,nesting", MODELS, ids=[m[0] for m in MODELS])
def test_chain_contraction_is_the_general_contraction(name, model, args, nesting, hard,
                                                      monkeypatch):
    """The first-order chain's forward recursion (where it applies: on the packed
    factors, or on the repeated factors stacked when the chain is in no plate) gives the
    evidence and every marginal of Pyro's general contraction."""
    pyro.clear_param_store()
    taken = []

    def spying(fn):
        def spy(*a, **k):
            result = fn(*a, **k)
            taken.append(result is not None)
            return result
        return spy

    for route in (chain_contract, stacked_chain_contract):
        monkeypatch.setattr(estep, route.__name__, spying(route))
    fast = exact_posterior(model, *args, max_plate_nesting=nesting, hard=hard)
    for route in (chain_contract, stacked_chain_contract):
        monkeypatch.setattr(estep, route.__name__, lambda *a, **k: None)
    general = exact_posterior(model, *args, max_plate_nesting=nesting, hard=hard)
    assert any(taken) == (name in CHAINS)
    assert float(fast.log_evidence) == pytest.approx(float(general.log_evidence), abs=1e-12)
    for site in general.marginals:
        assert torch.allclose(fast[site], general[site], atol=1e-12), site


@pytest.mark.parametrize("name,model,args,nesting", MODELS, ids=[m[0] for m in MODELS])
def test_repeated_sites_stacked_give_the_site_by_site_m_step(name, model, args, nesting,
                                                            monkeypatch):
    """The M-step with a chain's repeated sites stacked (one rule call per kind of
    step) sets every parameter as the M-step that takes the sites one by one."""
    results, groups = [], []
    original = grouping.group

    def counting(views):
        out = original(views)
        prestacked = any(getattr(v, "prestacked", False) for v in views)
        groups.append((len(views), len(out), prestacked))
        return out

    # stacked (by the E-step's repeats, or by the M-step's own keys), then site by site
    for key, repeats in ((grouping.site_key, estep.find_groups),
                         (lambda view: None, lambda *a: [])):
        model = {m[0]: m[1] for m in models()}[name]  # a fresh pyro.module
        pyro.clear_param_store()
        monkeypatch.setattr(grouping, "site_key", key)
        monkeypatch.setattr(estep, "find_groups", repeats)
        monkeypatch.setattr(auto, "group", counting)
        em = EM(model, max_plate_nesting=nesting)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            em.step(*args)
        results.append({k: v.detach().clone() for k, v in pyro.get_param_store().items()})
    for param, value in results[1].items():
        assert torch.allclose(results[0][param], value, atol=1e-12, rtol=1e-10), param
    if name in ("masked_hmm", "neural_hmm", "second_order_hmm", "factorial_hmm"):
        sites, stacked, prestacked = groups[0]
        assert stacked < sites or prestacked  # steps of the chain were stacked
        assert groups[1][1] == groups[1][0] and not groups[1][2]  # site by site


def test_m_step_reuses_the_e_step_trace_only_while_it_is_current(monkeypatch):
    """One model run per EM step (the E-step's tracked trace serves the M-step), and a
    fresh one when a parameter changed in between."""
    from pyro_models import masked_hmm as model  # Categorical and Bernoulli: one phase

    pyro.clear_param_store()
    calls = []
    original = auto.tracked_trace

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(auto, "tracked_trace", counting)
    em = EM(model, max_plate_nesting=2)
    em.step(SEQS, FULL)
    assert calls == []  # the M-step ran on the E-step's trace
    posterior = exact_posterior(model, SEQS, FULL, max_plate_nesting=2)
    with torch.no_grad():
        pyro.param("probs_y").unconstrained().add_(0.01)
    assert not posterior.trace.tracked.current((SEQS, FULL), {})
    em.m_step(posterior, SEQS, FULL)
    assert calls == [1]  # stale: traced again
    em.m_step(exact_posterior(model, SEQS, FULL.clone(), max_plate_nesting=2), SEQS, FULL)
    assert calls == [1, 1]  # other argument objects: traced again


def test_chain_contraction_in_a_plate_of_size_one(monkeypatch):
    """A plate of one sequence has no dim in Pyro's packed tensors."""
    pyro.clear_param_store()
    fast = exact_posterior(masked_hmm, SEQS[:1], FULL[:1], max_plate_nesting=2)
    monkeypatch.setattr(estep, "chain_contract", lambda *a, **k: None)
    general = exact_posterior(masked_hmm, SEQS[:1], FULL[:1], max_plate_nesting=2)
    assert float(fast.log_evidence) == pytest.approx(float(general.log_evidence), abs=1e-12)
    for site in general.marginals:
        assert torch.allclose(fast[site], general[site], atol=1e-12), site


def plain_chain(x):
    """A first-order HMM in no plate (Normal emissions: locations, then scales about
    them): the case the stacked-factor recursion serves."""
    init = pyro.param("pc_init", torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
                      constraint=constraints.simplex)
    trans = pyro.param("pc_trans", torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                                                 [0.3, 0.3, 0.4]], dtype=torch.float64),
                       constraint=constraints.simplex)
    locs = pyro.param("pc_locs", torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64))
    scales = pyro.param("pc_scales", torch.tensor([0.8, 1.0, 1.3], dtype=torch.float64),
                        constraint=constraints.positive)
    z = pyro.sample("z_0", dist.Categorical(init))
    pyro.sample("x_0", dist.Normal(locs[z], scales[z]), obs=x[0])
    for t in pyro.markov(range(1, len(x))):
        z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
        pyro.sample(f"x_{t}", dist.Normal(locs[z], scales[z]), obs=x[t])


def _spy_routes(monkeypatch):
    taken = []

    def spy(*a, **k):
        result = stacked_chain_contract(*a, **k)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(estep, "stacked_chain_contract", spy)
    return taken


def test_plain_chain_stacked_recursion_is_exact(monkeypatch):
    """The stacked recursion serves a plain chain, and gives brute force's evidence and
    every site's expected log-factor."""
    pyro.clear_param_store()
    taken = _spy_routes(monkeypatch)
    post = exact_posterior(plain_chain, X, max_plate_nesting=0)
    assert taken == [True]
    assert any(len(g.sites) > 1 and g.marginal is not None for g in post.trace.tracked.groups)
    log_ev, expected = brute_force_expectations(plain_chain, (X,),
                                                {f"z_{t}": ((), 3) for t in range(len(X))})
    assert float(post.log_evidence) == pytest.approx(float(log_ev), abs=1e-10)
    for site, value in expected.items():
        table = post.trace.nodes[site]["unscaled_log_prob"].detach()
        assert float((post[site] * table).sum()) == pytest.approx(float(value), abs=1e-10), site


def test_plain_chain_stacked_recursion_viterbi(monkeypatch):
    """With ``hard`` the stacked recursion gives the brute-force maximum of
    log p(X, Z) and a one-hot marginal at the best path."""
    pyro.clear_param_store()
    taken = _spy_routes(monkeypatch)
    post = exact_posterior(plain_chain, X, max_plate_nesting=0, hard=True)
    assert taken == [True]
    best, best_path = -float("inf"), None
    with poutine.block():
        for path in itertools.product(range(3), repeat=len(X)):
            data = {f"z_{t}": torch.tensor(v) for t, v in enumerate(path)}
            trace = poutine.trace(poutine.condition(plain_chain, data=data)).get_trace(X)
            value = float(trace.log_prob_sum())
            if value > best:
                best, best_path = value, path
    assert float(post.log_evidence) == pytest.approx(best, abs=1e-10)
    for t, state in enumerate(best_path):
        q = post[f"x_{t}"].reshape(-1)
        assert float(q[state]) == 1.0 and float(q.sum()) == 1.0


def test_plain_chain_m_step_stacked_is_site_by_site_with_one_trace(monkeypatch):
    """The M-step on the E-step's stacks sets every parameter as the site-by-site M-step
    does, scales about the new locations included, and runs the model once per step."""
    results, calls = [], []
    original = auto.tracked_trace
    monkeypatch.setattr(auto, "tracked_trace",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    for repeats in (estep.find_groups, lambda *a: []):
        pyro.clear_param_store()
        monkeypatch.setattr(estep, "find_groups", repeats)
        em = EM(plain_chain, max_plate_nesting=0)
        losses = [em.step(X) for _ in range(3)]
        assert calls == []  # the scales' update read the new locations without a re-run
        assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))
        results.append({k: v.detach().clone() for k, v in pyro.get_param_store().items()})
    for name, value in results[1].items():
        assert torch.allclose(results[0][name], value, atol=1e-12, rtol=1e-10), name


def test_plain_chain_scales_are_about_the_new_locations():
    """One step's Normal update is the weighted MLE written out: locations from the
    state posteriors, scales from the squared deviations about those new locations."""
    pyro.clear_param_store()
    gamma = torch.stack([exact_posterior(plain_chain, X, max_plate_nesting=0)[f"x_{t}"]
                         .reshape(-1) for t in range(len(X))])  # (T, K)
    EM(plain_chain, max_plate_nesting=0).step(X)
    n = gamma.sum(0)
    locs = (gamma * X[:, None]).sum(0) / n
    scales = ((gamma * (X[:, None] - locs) ** 2).sum(0) / n).sqrt()
    assert torch.allclose(pyro.param("pc_locs").detach(), locs, atol=1e-12)
    assert torch.allclose(pyro.param("pc_scales").detach(), scales, atol=1e-12)


@pytest.mark.parametrize("trap", [False, True], ids=["scaled", "log_space_fallback"])
def test_stacked_forward_backward_against_brute_force(trap):
    """The tables' recursion (scaled, or in log space when a scaled step underflows)
    gives log Z and every unary and pair marginal of the brute-force sum over paths."""
    from pyroem.infer import stacked_chain

    gen = torch.Generator().manual_seed(3)
    n, k = 5, 3
    unary = torch.randn(n, k, generator=gen, dtype=torch.float64)
    pair = torch.randn(n, k, k, generator=gen, dtype=torch.float64)
    pair[2, 0, :] = -float("inf")  # a forbidden move
    if trap:  # the likely first state can only move to a state 2000 nats less likely
        unary[0] = torch.tensor([0.0, -2000.0, -2000.0])
        pair[1, 0] = torch.tensor([-float("inf"), 0.0, -float("inf")])
        unary[1] = torch.tensor([0.0, -2000.0, 0.0])
    paths = torch.tensor(list(itertools.product(range(k), repeat=n)))
    steps = torch.arange(n)
    scores = unary[steps, paths].sum(-1) + pair[steps[1:], paths[:, :-1], paths[:, 1:]].sum(-1)
    log_z = scores.logsumexp(0)
    w = (scores - log_z).exp()
    gamma = torch.stack([torch.zeros(k, dtype=w.dtype).index_add(0, paths[:, t], w)
                         for t in range(n)])
    xi = torch.stack([torch.zeros(k * k, dtype=w.dtype).index_add(
        0, paths[:, t - 1] * k + paths[:, t], w).reshape(k, k) for t in range(1, n)])
    calls = []
    original = stacked_chain._log_forward_backward

    def spy(*a):
        calls.append(1)
        return original(*a)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stacked_chain, "_log_forward_backward", spy)
        ours = stacked_chain._forward_backward(unary, pair)
    assert bool(calls) == trap
    assert float(ours[0]) == pytest.approx(float(log_z), rel=1e-12)
    assert torch.allclose(ours[1], gamma, atol=1e-10)
    assert torch.allclose(ours[2][1:], xi, atol=1e-10)


def test_selection_push_is_the_forward_selection():
    """``Selection.push`` (the transpose of ``pull``) gives the argument that a new
    parameter value would give: indexing, expanding, permuting and slicing redone."""
    from pyroem.infer.mstep.provenance import Selection

    gen = torch.Generator().manual_seed(2)
    p = torch.randn(4, 3, generator=gen, dtype=torch.float64).requires_grad_()
    z = torch.tensor([[2], [0], [2]])

    def arg(q):
        return q[z].expand(3, 5, 3).permute(1, 0, 2)[:, :, 1:]

    sel = Selection.find(arg(p), {id(p): "p"})
    new = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    assert torch.equal(sel.push(new), arg(new))
    assert torch.equal(Selection.find(p, {id(p): "p"}).push(new), new)  # the parameter


def test_plain_chain_float32_follows_float64():
    """The stacked route in float32: evidence and marginals close to float64's."""
    results = []
    for dtype in (torch.float32, torch.float64):
        pyro.clear_param_store()
        for name, value in (("pc_init", [0.5, 0.3, 0.2]), ("pc_locs", [-1.0, 0.5, 2.0])):
            pyro.param(name, torch.tensor(value, dtype=dtype),
                       constraint=constraints.simplex if name == "pc_init" else
                       constraints.real)
        pyro.param("pc_trans", torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                                             [0.3, 0.3, 0.4]], dtype=dtype),
                   constraint=constraints.simplex)
        pyro.param("pc_scales", torch.tensor([0.8, 1.0, 1.3], dtype=dtype),
                   constraint=constraints.positive)
        results.append(exact_posterior(plain_chain, X.to(dtype), max_plate_nesting=0))
    low, high = results
    assert low.log_evidence.dtype == torch.float32
    assert float(low.log_evidence) == pytest.approx(float(high.log_evidence), rel=1e-5)
    for site in high.marginals:
        assert low[site].dtype == torch.float32
        assert torch.allclose(low[site].double(), high[site], atol=1e-5), site


def test_parameter_without_closed_form_says_so_once():
    """A chain whose emission location is not a selection of its parameter
    (``2 * locs[z]``) says once which parameter has no closed form and which route it
    takes; a plain chain says nothing."""

    def scaled_chain(x):
        init = pyro.param("sc_init", torch.tensor([0.5, 0.5], dtype=torch.float64),
                          constraint=constraints.simplex)
        trans = pyro.param("sc_trans", torch.tensor([[0.7, 0.3], [0.3, 0.7]],
                                                    dtype=torch.float64),
                           constraint=constraints.simplex)
        locs = pyro.param("sc_locs", torch.tensor([-1.0, 1.0], dtype=torch.float64))
        z = pyro.sample("z_0", dist.Categorical(init))
        pyro.sample("x_0", dist.Normal(2 * locs[z], 1.0), obs=x[0])
        for t in pyro.markov(range(1, len(x))):
            z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
            pyro.sample(f"x_{t}", dist.Normal(2 * locs[z], 1.0), obs=x[t])

    for model, expected in ((scaled_chain, ["sc_locs"]), (plain_chain, [])):
        pyro.clear_param_store()
        em = EM(model, max_plate_nesting=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = [em.step(X) for _ in range(3)]
        messages = [str(w.message) for w in caught if "no closed-form update" in str(w.message)]
        assert len(messages) == len(expected)
        for name, message in zip(expected, messages):
            assert f"'{name}'" in message and "numerically" in message
            assert em.plan.params[name] == "numerical"
        assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))


SHIFT = torch.tensor([0.0, 1.0, -2.0, 0.5, 3.0], dtype=torch.float64)


def shifted_chain(x):
    """A chain whose emission location adds a constant per step: ``locs[z] + c_t`` has
    the same autograd graph at every step (an addition saves nothing), so only the
    argument values tell the steps apart."""
    init = pyro.param("sh_init", torch.tensor([0.5, 0.5], dtype=torch.float64),
                      constraint=constraints.simplex)
    trans = pyro.param("sh_trans", torch.tensor([[0.7, 0.3], [0.3, 0.7]], dtype=torch.float64),
                       constraint=constraints.simplex)
    locs = pyro.param("sh_locs", torch.tensor([-1.0, 1.0], dtype=torch.float64))
    scales = pyro.param("sh_scales", torch.tensor([1.0, 0.7], dtype=torch.float64),
                        constraint=constraints.positive)
    z = pyro.sample("z_0", dist.Categorical(init))
    pyro.sample("x_0", dist.Normal(locs[z] + SHIFT[0], scales[z]), obs=x[0])
    for t in pyro.markov(range(1, len(x))):
        z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
        pyro.sample(f"x_{t}", dist.Normal(locs[z] + SHIFT[t], scales[z]), obs=x[t])


def test_steps_that_differ_by_a_constant_are_not_repeats(monkeypatch):
    """Repeats need equal argument values as well as equal graphs: the evidence and
    every expectation stay brute force's, and one EM step equals the site-by-site one."""
    pyro.clear_param_store()
    post = exact_posterior(shifted_chain, X, max_plate_nesting=0)
    log_ev, expected = brute_force_expectations(shifted_chain, (X,),
                                                {f"z_{t}": ((), 2) for t in range(len(X))})
    assert float(post.log_evidence) == pytest.approx(float(log_ev), abs=1e-10)
    for site, value in expected.items():
        table = post.trace.nodes[site]["unscaled_log_prob"].detach()
        assert float((post[site] * table).sum()) == pytest.approx(float(value), abs=1e-10), site
    grouped = [g.names for g in post.trace.tracked.groups]
    assert not any(n.startswith("x_") for names in grouped for n in names)
    results = []
    for repeats, key in ((estep.find_groups, grouping.site_key),
                         (lambda *a: [], lambda view: None)):
        pyro.clear_param_store()
        monkeypatch.setattr(estep, "find_groups", repeats)
        monkeypatch.setattr(grouping, "site_key", key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sh_locs: no closed form
            EM(shifted_chain, max_plate_nesting=0).step(X)
        results.append({k: v.detach().clone() for k, v in pyro.get_param_store().items()})
    for name, value in results[1].items():
        assert torch.allclose(results[0][name], value, atol=1e-10), name


def test_learnt_gamma_concentration_says_which_rule_has_no_closed_form():
    """A Gamma emission with a learnt concentration: its rule has no closed form, which
    the warning says (once per parameter) instead of blaming the indexing."""

    def gamma_chain(x):
        init = pyro.param("gc_init", torch.tensor([0.5, 0.5], dtype=torch.float64),
                          constraint=constraints.simplex)
        trans = pyro.param("gc_trans", torch.tensor([[0.6, 0.4], [0.4, 0.6]],
                                                    dtype=torch.float64),
                           constraint=constraints.simplex)
        shape = pyro.param("gc_shape", torch.tensor([2.0, 5.0], dtype=torch.float64),
                           constraint=constraints.positive)
        rate = pyro.param("gc_rate", torch.tensor([1.0, 2.0], dtype=torch.float64),
                          constraint=constraints.positive)
        z = pyro.sample("z_0", dist.Categorical(init))
        pyro.sample("x_0", dist.Gamma(shape[z], rate[z]), obs=x[0])
        for t in pyro.markov(range(1, len(x))):
            z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
            pyro.sample(f"x_{t}", dist.Gamma(shape[z], rate[z]), obs=x[t])

    pyro.clear_param_store()
    em = EM(gamma_chain, max_plate_nesting=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            em.step(X.abs() + 0.1)
    messages = sorted(str(w.message) for w in caught if "no closed-form update" in str(w.message))
    assert len(messages) == 2
    for name, message in zip(("gc_rate", "gc_shape"), messages):
        assert f"'{name}'" in message and "Gamma rule has no closed form" in message

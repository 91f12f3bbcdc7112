"""EM on Pyro's own kinds of models agrees with Pyro: ``EM.step``'s loss is
``-TraceEnum_ELBO.differentiable_loss`` (masks on latents, subsampling with a prior factor
outside the plate, poutine.scale, pyro.module, DiscreteHMM), and every parameter that
changes log p(X) is updated."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from generic_brute import brute_force
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro_models import masked_hmm, models, subsampled_map_mixture

from pyroem.infer import EM, exact_posterior, expected_log_joint

MODELS = models()


def trace_enum_loss(model, args, max_plate_nesting):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no sites configured for enumeration"
        loss = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting).differentiable_loss(
            config_enumerate(model, "parallel"), lambda *a, **k: None, *args)
    return float(loss.detach())


@pytest.mark.parametrize("name,model,args,nesting", MODELS, ids=[m[0] for m in MODELS])
def test_em_loss_is_trace_enum_loss_and_never_rises(name, model, args, nesting):
    pyro.clear_param_store()
    em = EM(model, max_plate_nesting=nesting)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyro.module: said once, tested below
        for _ in range(3):
            expected = trace_enum_loss(model, args, nesting)
            before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
            losses.append(em.step(*args))
            assert losses[-1] == pytest.approx(expected, rel=1e-10, abs=1e-10)
            changed = {k for k, v in pyro.get_param_store().items()
                       if not torch.equal(before[k], v.detach())}
            # every parameter that log p(X) depends on is updated by the step
            assert changed == set(before), (name, set(before) - changed)
    assert all(b <= a + 1e-10 for a, b in zip(losses, losses[1:])), losses


def _unpadded_hmm(seq):
    """The same HMM on one sequence without padding (no mask at all)."""
    probs_x, probs_y = pyro.param("probs_x"), pyro.param("probs_y")
    x = 0
    for t in pyro.markov(range(seq.shape[0])):
        x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]))
        pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x]).to_event(1), obs=seq[t])


def test_masked_latents_are_summed_over_not_counted():
    """hmm.py's padding idiom: the evidence is the sum over the unpadded sequences (a
    masked latent still sums to one, it does not add log K)."""
    pyro.clear_param_store()
    _, _, (seqs, lengths), _ = next(m for m in MODELS if m[0] == "masked_hmm")
    post = exact_posterior(masked_hmm, seqs, lengths, max_plate_nesting=2)
    total = 0.0
    for b in range(seqs.shape[0]):
        seq = seqs[b, :lengths[b]]
        latents = {f"x_{t}": ((), 2) for t in range(len(seq))}
        total += float(brute_force(_unpadded_hmm, (seq,), latents)[0])
    assert float(post.log_evidence) == pytest.approx(total, abs=1e-10)


def test_subsampled_plate_with_a_prior_outside_it_is_map_em():
    """The plate's scale N/n on its sites only, the Dirichlet factor unscaled; the
    M-step is the MAP with the scaled responsibilities."""
    pyro.clear_param_store()
    _, _, (x, idx), _ = next(m for m in MODELS if m[0] == "subsampled_map_mixture")
    em = EM(subsampled_map_mixture, max_plate_nesting=1)
    exact_posterior(subsampled_map_mixture, x, idx, max_plate_nesting=1)  # params exist
    w, locs = pyro.param("weights").detach().clone(), pyro.param("locs").detach().clone()
    alpha, scale = 2.0, x.shape[0] / len(idx)
    joint = w.log() + dist.Normal(locs, 1.0).log_prob(x[idx].unsqueeze(-1))  # (n, K)
    by_hand = (scale * joint.logsumexp(-1).sum()
               + dist.Dirichlet(torch.full((3,), alpha, dtype=w.dtype)).log_prob(w))
    assert em.step(x, idx) == pytest.approx(-float(by_hand), rel=1e-12)
    resp = joint.softmax(-1)
    counts = scale * resp.sum(0) + alpha - 1
    assert torch.allclose(pyro.param("weights"), counts / counts.sum(), atol=1e-12)
    mean = (resp * x[idx].unsqueeze(-1)).sum(0) / resp.sum(0)
    assert torch.allclose(pyro.param("locs"), mean, atol=1e-12)


def test_module_parameters_are_maximised_and_named_once():
    pyro.clear_param_store()
    _, model, (x,), _ = next(m for m in MODELS if m[0] == "neural_hmm")
    em = EM(model, max_plate_nesting=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            em.step(x)
    said = [str(w.message) for w in caught if "pyro.module" in str(w.message)]
    assert len(said) == 1 and "emitter$$$embed.weight" in said[0]
    assert em.plan.params["emitter$$$embed.weight"] == "numerical"
    # the numerical M-step maximised Q in the module's weights: its gradient there is ~0
    posterior = exact_posterior(model, x, max_plate_nesting=0)
    em.m_step(posterior, x)
    q = expected_log_joint(model, posterior, (x,), {}, 0)
    grad, = torch.autograd.grad(q, [model.emitter.embed.weight])
    assert grad.abs().max() < 1e-6


def test_observation_dist_parameters_of_a_discrete_hmm_are_updated():
    pyro.clear_param_store()
    _, model, (x,), _ = next(m for m in MODELS if m[0] == "discrete_hmm_obs_only")
    em = EM(model, max_plate_nesting=1)
    em.step(x)
    assert em.plan.params == {"hmm_locs": "closed-form:Normal",
                              "hmm_scales": "closed-form:Normal"}

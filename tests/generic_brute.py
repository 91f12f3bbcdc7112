"""Brute-force references for the generic EM tests: sum over every joint configuration of
the latent variables of a (tiny) model."""

import itertools

import pyro
import pyro.poutine as poutine
import torch


def brute_force(model, args, latents):
    r"""
    Enumerate every joint assignment of the latents.

    :param latents: ``{site_name: (shape, num_values)}``; each site is conditioned on an
        integer tensor of that shape (cast to float64 for Bernoulli-like sites is done
        by the caller's model).
    :returns: ``(log_evidence, configs, log_posterior)`` with ``configs`` a list of dicts
        and ``log_posterior`` the tensor of :math:`\log p(Z|X)` over them.
    """
    names = list(latents)
    entries = [(n, idx) for n in names
               for idx in itertools.product(*[range(s) for s in latents[n][0]])]
    configs, log_joint = [], []
    with poutine.block():
        for values in itertools.product(*[range(latents[n][1]) for n, _ in entries]):
            cfg = {n: torch.zeros(latents[n][0], dtype=torch.long) for n in names}
            for (n, idx), v in zip(entries, values):
                cfg[n][idx] = v
            trace = poutine.trace(poutine.condition(model, data=cfg)).get_trace(*args)
            configs.append(cfg)
            log_joint.append(trace.log_prob_sum().detach())
    log_joint = torch.stack(log_joint)
    log_evidence = log_joint.logsumexp(0)
    return log_evidence, configs, log_joint - log_evidence


def marginal(configs, log_post, fn):
    """Posterior expectation of ``fn(config)`` (a tensor) under the brute-force posterior."""
    probs = log_post.exp()
    return sum(p * fn(c) for p, c in zip(probs, configs))


def one_hot(z, k):
    return torch.nn.functional.one_hot(z, k).to(torch.float64)


def param(name):
    return pyro.param(name).detach().clone()


def init_params(model, *args):
    """Run ``model`` once under a trace so that its ``pyro.param`` s exist."""
    with poutine.block():
        poutine.trace(model).get_trace(*args)

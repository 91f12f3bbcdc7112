"""Pyro-style models for the agreement tests, written as a Pyro user writes them (after
Pyro's enumeration tests and ``examples/hmm.py``): each entry is
``(name, model, args, max_plate_nesting)`` with tiny float64 data."""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import constraints

D64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _simplex(name, shape, seed):
    return pyro.param(name, torch.rand(shape, generator=_gen(seed), dtype=D64) + 0.5,
                      constraint=constraints.simplex)


def mixture(x):
    weights = _simplex("weights", (3,), 0)
    locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 2.0], dtype=D64))
    scale = pyro.param("scale", torch.tensor(1.3, dtype=D64), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scale), obs=x)


def scaled_mixture(x):
    with poutine.scale(scale=2.5):
        mixture(x)


def subsampled_map_mixture(x, idx):
    """A subsampled plate plus a prior factor outside it (MAP-EM)."""
    weights = _simplex("weights", (3,), 0)
    locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 2.0], dtype=D64))
    pyro.sample("weights_prior", dist.Dirichlet(torch.full((3,), 2.0, dtype=D64)),
                obs=weights)
    with pyro.plate("data", x.shape[0], subsample=idx) as i:
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x[i])


def masked_hmm(sequences, lengths):
    """``examples/hmm.py``'s model_1: padded sequences, the padding masked out with
    ``poutine.mask`` on both the latent and the observation."""
    K, D = 2, sequences.shape[-1]
    probs_x = _simplex("probs_x", (K, K), 1)
    probs_y = pyro.param("probs_y", torch.rand(K, D, generator=_gen(2), dtype=D64) * 0.8 + 0.1,
                         constraint=constraints.unit_interval)
    tones = pyro.plate("tones", D, dim=-1)
    with pyro.plate("sequences", sequences.shape[0], dim=-2):
        x = 0
        for t in pyro.markov(range(sequences.shape[1])):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]))
                with tones:
                    pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]),
                                obs=sequences[:, t])


def factorial_hmm(sequences, lengths):
    """``examples/hmm.py``'s model_3: two independent chains emitting together."""
    K, D = 2, sequences.shape[-1]
    probs_w = _simplex("probs_w", (K, K), 3)
    probs_x = _simplex("probs_x", (K, K), 4)
    probs_y = pyro.param("probs_y", torch.rand(K, K, D, generator=_gen(5), dtype=D64) * 0.8
                         + 0.1, constraint=constraints.unit_interval)
    tones = pyro.plate("tones", D, dim=-1)
    with pyro.plate("sequences", sequences.shape[0], dim=-2):
        w = x = 0
        for t in pyro.markov(range(sequences.shape[1])):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                w = pyro.sample(f"w_{t}", dist.Categorical(probs_w[w]))
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]))
                with tones:
                    pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[w, x].squeeze(-2)),
                                obs=sequences[:, t])


def second_order_hmm(x):
    """A chain whose state depends on the two before (``pyro.markov(history=2)``)."""
    K = 2
    trans = _simplex("trans2", (K, K, K), 6)
    locs = pyro.param("locs2", torch.tensor([-1.0, 1.0], dtype=D64))
    z_prev, z = 0, 0
    for t in pyro.markov(range(x.shape[0]), history=2):
        z_prev, z = z, pyro.sample(f"z_{t}", dist.Categorical(trans[z_prev, z]))
        pyro.sample(f"x_{t}", dist.Normal(locs[z], 1.0), obs=x[t])


def nested_plates(x):
    """A latent per group and one per item inside it."""
    group_w = _simplex("group_w", (2,), 7)
    item_w = _simplex("item_w", (2, 3), 8)
    locs = pyro.param("locs3", torch.tensor([-2.0, 0.0, 2.0], dtype=D64))
    with pyro.plate("groups", x.shape[0], dim=-2):
        g = pyro.sample("g", dist.Categorical(group_w))
        with pyro.plate("items", x.shape[1], dim=-1):
            c = pyro.sample("c", dist.Categorical(item_w[g]))
            pyro.sample("obs", dist.Normal(locs[c], 1.0), obs=x)


def two_latents(x):
    """Two independent latents per item."""
    wa, wb = _simplex("wa", (2,), 9), _simplex("wb", (3,), 10)
    locs = pyro.param("locs4", torch.tensor([[-2.0, 0.0, 1.0], [0.5, 2.0, 3.0]], dtype=D64))
    with pyro.plate("data", x.shape[0]):
        a = pyro.sample("a", dist.Categorical(wa))
        b = pyro.sample("b", dist.Categorical(wb))
        pyro.sample("x", dist.Normal(locs[a, b], 1.0), obs=x)


def masked_observations(x, keep):
    """A mixture whose observations are partly masked out."""
    weights = _simplex("weights", (3,), 0)
    locs = pyro.param("locs", torch.tensor([-1.0, 0.0, 2.0], dtype=D64))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        with poutine.mask(mask=keep):
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


class Emitter(torch.nn.Module):
    """A tiny network mapping a state to an emission mean (the neural HMM's idea)."""

    def __init__(self, K):
        super().__init__()
        self.embed = torch.nn.Embedding(K, 1).double()
        with torch.no_grad():
            self.embed.weight.copy_(torch.tensor([[-1.0], [1.5]], dtype=D64))

    def forward(self, z):
        return self.embed(z).squeeze(-1)


def make_neural_hmm():
    """An HMM whose emission means come from a ``pyro.module`` (a fresh one per call)."""
    emitter = Emitter(2)

    def neural_hmm(x):
        net = pyro.module("emitter", emitter)
        trans = _simplex("trans_n", (2, 2), 11)
        z = 0
        for t in pyro.markov(range(x.shape[0])):
            z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
            pyro.sample(f"x_{t}", dist.Normal(net(z), 1.0), obs=x[t])

    neural_hmm.emitter = emitter
    return neural_hmm


def discrete_hmm_obs_only(x):
    """A ``DiscreteHMM`` whose only parameters are in its observation distribution."""
    locs = pyro.param("hmm_locs", torch.tensor([-1.0, 1.0], dtype=D64))
    scales = pyro.param("hmm_scales", torch.tensor([1.0, 0.7], dtype=D64),
                        constraint=constraints.positive)
    init = torch.tensor([0.5, 0.5], dtype=D64).log()
    trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=D64).log()
    with pyro.plate("seqs", x.shape[0]):
        pyro.sample("x", dist.DiscreteHMM(init, trans, dist.Normal(locs, scales)), obs=x)


def discrete_hmm(x):
    """A ``DiscreteHMM`` with simplex initial and transition parameters."""
    init = _simplex("hmm_init", (2,), 12)
    trans = _simplex("hmm_trans", (2, 2), 13)
    locs = pyro.param("hmm_locs", torch.tensor([-1.0, 1.0], dtype=D64))
    scales = pyro.param("hmm_scales", torch.tensor([1.0, 0.7], dtype=D64),
                        constraint=constraints.positive)
    with pyro.plate("seqs", x.shape[0]):
        pyro.sample("x", dist.DiscreteHMM(init.log(), trans.log(), dist.Normal(locs, scales)),
                    obs=x)


def discrete_hmm_nested_plates(x):
    """A ``DiscreteHMM`` per cell of two nested plates, one shared chain."""
    init = _simplex("hmm_init", (2,), 12)
    trans = _simplex("hmm_trans", (2, 2), 13)
    locs = pyro.param("hmm_locs", torch.tensor([-1.0, 1.0], dtype=D64))
    with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", x.shape[1], dim=-1):
        pyro.sample("x", dist.DiscreteHMM(init.log(), trans.log(), dist.Normal(locs, 1.0)),
                    obs=x)


def _data():
    g = _gen(42)
    x = torch.randn(6, generator=g, dtype=D64) * 2
    seqs = (torch.rand(3, 4, 2, generator=g) > 0.5).to(D64)
    lengths = torch.tensor([4, 2, 3])
    grid = torch.randn(2, 3, generator=g, dtype=D64) * 2
    chains = torch.randn(2, 5, generator=g, dtype=D64)
    return x, seqs, lengths, grid, chains


def models():
    """The list of ``(name, model, args, max_plate_nesting)``."""
    x, seqs, lengths, grid, chains = _data()
    return [
        ("mixture", mixture, (x,), 1),
        ("scaled_mixture", scaled_mixture, (x,), 1),
        ("subsampled_map_mixture", subsampled_map_mixture, (x, torch.tensor([0, 2, 5])), 1),
        ("masked_hmm", masked_hmm, (seqs, lengths), 2),
        ("factorial_hmm", factorial_hmm, (seqs, lengths), 2),
        ("second_order_hmm", second_order_hmm, (x[:5],), 0),
        ("nested_plates", nested_plates, (grid,), 2),
        ("two_latents", two_latents, (x,), 1),
        ("masked_observations", masked_observations,
         (x, torch.tensor([True, False, True, True, False, True])), 1),
        ("neural_hmm", make_neural_hmm(), (x[:5],), 0),
        ("discrete_hmm_obs_only", discrete_hmm_obs_only, (chains,), 1),
        ("discrete_hmm", discrete_hmm, (chains,), 1),
        ("discrete_hmm_nested_plates", discrete_hmm_nested_plates,
         (chains.reshape(2, 1, 5).expand(2, 3, 5) + torch.arange(3.0).unsqueeze(-1),), 2),
    ]

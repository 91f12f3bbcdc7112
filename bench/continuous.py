"""Continuous latents: the cost of the generic Gaussian E-step and of simplified PLDA.

Run by hand:  python bench/continuous.py [--points 50 200 --repeats 10 --threads 2]

Prints best-of-N wall-clock seconds (runs interleaved, so that load from other processes
hits both alike) and ratios measured in the same run:

* **generic vs closed form**: one E-step of a factor model written by hand as a Pyro
  program (``pyroem.infer.gaussian.gaussian_posterior``: joint Gaussian conditioning over
  all ``N L`` latent values) against ``FactorAnalysis.e_step`` (the O(N D L) closed form)
  on the same data and parameters, with the largest difference of the log-evidences;
  and one generic EM step (E-step + L-BFGS M-step on the exact Q) against one
  ``FactorAnalysis`` EM step;
* **simplified PLDA vs two-covariance PLDA**: one EM step of ``PLDA(D, rank=r)`` against
  ``PLDA(D)`` on the same embeddings (their E-steps share the data summary).
"""

import argparse
import time

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from pyroem.infer import EM
from pyroem.infer.gaussian import gaussian_posterior
from pyroem.models import PLDA, FactorAnalysis

D, L = 6, 2


def factor_model(x):
    W = pyro.param("W", 0.3 * torch.ones(L, D, dtype=x.dtype) + torch.eye(L, D, dtype=x.dtype))
    mu = pyro.param("loc", torch.zeros(D, dtype=x.dtype))
    psi = pyro.param("psi", torch.ones(D, dtype=x.dtype), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(L, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W + mu, psi.sqrt()).to_event(1), obs=x)


def best(fns, repeats):
    times = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i] = min(times[i], time.perf_counter() - start)
    return times


def generic_rows(points, repeats):
    rows = []
    for n in points:
        truth = FactorAnalysis(D, L).double()
        g = torch.Generator().manual_seed(0)
        truth.components = torch.randn(L, D, generator=g, dtype=torch.float64)
        x = truth.sample(n, seed=0)[0]
        pyro.clear_param_store()
        em = EM(factor_model)
        em.e_step(x)  # creates the params; warms torch.func up
        store = pyro.get_param_store()
        fa = FactorAnalysis(D, L).double()
        fa.components, fa.mean = store["W"].detach(), store["loc"].detach()
        fa.noise_variance = store["psi"].detach()
        fa_em = EM(fa.model, fa.guide)
        gap = abs(float(gaussian_posterior(factor_model, x).log_evidence)
                  - float(fa.e_step(x).log_evidence))
        t_gen, t_fa = best([lambda: gaussian_posterior(factor_model, x),
                            lambda: fa.e_step(x)], repeats)
        s_gen, s_fa = best([lambda: em.step(x), lambda: fa_em.step(x)], max(1, repeats // 2))
        rows.append((n, n * L, t_gen, t_fa, s_gen, s_fa, gap))
    print(f"factor model (D={D}, L={L}) written by hand vs FactorAnalysis, float64")
    print(f"{'N':>6} {'latents':>8} {'generic E':>11} {'closed E':>10} {'ratio':>8} "
          f"{'generic EM':>11} {'FA EM':>9} {'ratio':>8} {'|dlogp|':>9}")
    for n, d, tg, tf, sg, sf, gap in rows:
        print(f"{n:>6} {d:>8} {tg:>11.4f} {tf:>10.5f} {tg / tf:>7.0f}x "
              f"{sg:>11.4f} {sf:>9.5f} {sg / sf:>7.0f}x {gap:>9.1e}")


def plda_rows(repeats, dim=64, rank=8, speakers=500, per_speaker=10):
    truth = PLDA(dim, rank=rank).double()
    g = torch.Generator().manual_seed(1)
    truth.speaker_loadings = torch.randn(dim, rank, generator=g, dtype=torch.float64)
    x, labels, _ = truth.sample(speakers, per_speaker, seed=0)
    models = {"two-covariance": PLDA(dim), f"rank {rank}": PLDA(dim, rank=rank),
              f"rank {dim}": PLDA(dim, rank=dim)}
    steps = []
    for model in models.values():
        model.fit(x, labels, max_iter=1, tol=0)
        args = model.prepare(x, labels)
        em = EM(model.model, model.guide)
        steps.append(lambda em=em, args=args: em.step(*args))
    times = best(steps, repeats)
    print(f"\nPLDA EM step, D={dim}, {speakers} speakers x {per_speaker}, float64")
    for (name, _), t in zip(models.items(), times):
        print(f"{name:>15}: {t * 1e3:8.2f} ms  ({t / times[0]:.2f}x the two-covariance step)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, best of {args.repeats}\n")
    generic_rows(args.points, args.repeats)
    plda_rows(3 * args.repeats)  # milliseconds each: more repeats for a quiet one


if __name__ == "__main__":
    main()

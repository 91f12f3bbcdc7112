"""The cost of partial observation: one EM iteration with missing values, labels or
weights against the same iteration on complete data (no peer offers missing values, so
the reference is pyroem's own complete-data iteration, measured in the same run).

Run by hand (from the repository root):  PYTHONPATH=. python bench/partial.py [--n 20000 --dim 8 --k 8 --repeats 5]

Prints the best of interleaved repeats (seconds per iteration, torch threads = 2) for a
full-covariance GaussianMixture and a GaussianHMM (one sequence of n frames), and the
ratio to complete data.
"""

import argparse
import time

import torch

from pyroem.infer import EM
from pyroem.models import GaussianHMM, GaussianMixture


def best_interleaved(fns, repeats):
    """Best time of each function, running them in turn ``repeats`` times (after a warm
    up), so that a busy machine slows all of them alike."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def step(model, *data, **partial):
    em = EM(model.model, model.guide)
    args = model.prepare(*data, **partial)
    return lambda: em.step(*args)


def cases(model_class, x, k, n, generator):
    dim = x.shape[-1]
    model = model_class(k, dim).double().initialize(x, seed=0)
    mask10 = torch.rand(x.shape, generator=generator) > 0.1
    mask30 = torch.rand(x.shape, generator=generator) > 0.3
    frames = (torch.rand(x.shape[:-1], generator=generator) > 0.2).unsqueeze(-1).expand(x.shape)
    labels = torch.where(torch.rand(x.shape[:-1], generator=generator) < 0.05,
                         torch.randint(k, x.shape[:-1], generator=generator), -1)
    out = {"complete": step(model, x), "obs_mask all True": step(
        model, x, obs_mask=torch.ones_like(x, dtype=torch.bool)),
        "10% values missing": step(model, x, obs_mask=mask10),
        "30% values missing": step(model, x, obs_mask=mask30),
        "20% whole rows missing": step(model, x, obs_mask=frames),
        "5% labels": step(model, x, labels=labels)}
    if model_class is GaussianMixture:
        out["sample_weight"] = step(model, x, sample_weight=torch.rand(n, generator=generator,
                                                                      dtype=x.dtype))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    centers = 4 * torch.randn(args.k, args.dim, generator=g, dtype=torch.float64)
    x = centers[torch.randint(args.k, (args.n,), generator=g)] + torch.randn(
        args.n, args.dim, generator=g, dtype=torch.float64)
    print(f"one EM iteration, full covariance, N={args.n} D={args.dim} K={args.k}, float64, "
          f"torch threads={torch.get_num_threads()}, best of {args.repeats} interleaved")
    for name, cls in (("GaussianMixture", GaussianMixture), ("GaussianHMM", GaussianHMM)):
        best = best_interleaved(cases(cls, x, args.k, args.n, g), args.repeats)
        print(f"\n{name:24s} {'seconds':>9s} {'vs complete':>12s}")
        for case, seconds in best.items():
            print(f"{case:24s} {seconds:9.4f} {seconds / best['complete']:11.2f}x")


if __name__ == "__main__":
    main()

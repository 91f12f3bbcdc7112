"""Time one EM iteration: the generic route (a from-scratch GMM written with pyro.params,
automatic closed-form M-step) against the built-in GaussianMixture (its own closed form).

    python bench/generic.py            # N=100000, D=16, K=32, full covariance, float64
    python bench/generic.py --n 20000  # a quicker run
"""

import argparse
import os
import sys
import time

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pyroem.distributions import MultivariateNormal
from pyroem.infer import EM
from pyroem.models import GaussianMixture


def make_data(n, d, k, generator):
    centres = 4 * torch.randn(k, d, generator=generator, dtype=torch.float64)
    labels = torch.randint(k, (n,), generator=generator)
    return centres[labels] + torch.randn(n, d, generator=generator, dtype=torch.float64)


def gmm_model(x):
    """A Gaussian mixture written from scratch with pyro.params."""
    weights = pyro.param("weights")
    locs = pyro.param("locs")
    scale_tril = pyro.param("scale_tril")
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", MultivariateNormal(locs[z], scale_tril=scale_tril[z]), obs=x)


def best_time(step, x, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - start)
    return min(times), sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = make_data(args.n, args.d, args.k, generator)

    builtin = GaussianMixture(args.k, args.d, "full").double()
    builtin.fit(x, max_iter=1, init="kmeans++", seed=0)
    pyro.clear_param_store()
    pyro.param("weights", builtin.weights.detach().clone(), constraint=constraints.simplex)
    pyro.param("locs", builtin.means.detach().clone())
    pyro.param("scale_tril", torch.linalg.cholesky(builtin.covariances),
               constraint=constraints.lower_cholesky)
    em_builtin = EM(builtin.model)
    em_generic = EM(gmm_model)
    # Warm up (feature cache, first trace); then both are at the same parameters.
    em_builtin.step(x)
    em_generic.step(x)
    print(f"strategies: {em_generic.m_step.strategies}")
    gap = (pyro.param("locs") - builtin.means).abs().max().item()
    print(f"max |means generic - built-in| after one step: {gap:.2e}")

    b_min, b_med = best_time(em_builtin.step, x, args.repeats)
    g_min, g_med = best_time(em_generic.step, x, args.repeats)
    print(f"\nOne EM iteration, N={args.n}, D={args.d}, K={args.k}, full covariance, float64, "
          f"{torch.get_num_threads()} threads, best (median) of {args.repeats}")
    print("| route | seconds | ratio to built-in |\n|---|---|---|")
    print(f"| built-in GaussianMixture (strategy 1) | {b_min:.4f} ({b_med:.4f}) | 1.00 |")
    print(f"| generic model + automatic closed form (strategy 2) | {g_min:.4f} ({g_med:.4f}) "
          f"| {g_min / b_min:.2f} |")


if __name__ == "__main__":
    main()

"""Time to converge: exact EM against Pyro's SVI on the same Gaussian mixture and start.

For each data set (standardised) a GaussianMixture starts from one set of parameters
(random responsibilities, then an M-step: scikit-learn's ``init_params="random"``). The
reference is EM run to convergence (change < 1e-12 nats per point): its log-likelihood
L*. Each method then runs from the same start until log p(X) >= L* - 1e-3 * N, and the
wall-clock seconds it needed are reported (median of ``--repeats`` runs; the exact
log p(X) checked after each step is not timed). Methods:

- ``em``: ``pyroem.infer.EM`` (E-step by Pyro enumeration + closed-form M-step);
- ``svi``: ``pyro.infer.SVI`` + ``TraceEnum_ELBO`` + Adam on the model's own guide
  (q(z_n) per point, trained jointly with the parameters), for each learning rate;
- ``svi-marginal``: the same model with an empty guide, so ``TraceEnum_ELBO`` sums z out
  and Adam ascends log p(X) itself (the strongest gradient baseline).

Run:  python bench/em_vs_svi.py [--datasets faithful iris] [--repeats 3]
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyroem.datasets import load_old_faithful  # noqa: E402
from pyroem.infer import EM  # noqa: E402
from pyroem.models import GaussianMixture  # noqa: E402

LRS = (0.01, 0.03, 0.1, 0.3)


def load(name):
    if name == "faithful":
        x, k = load_old_faithful(), 2
    else:
        from sklearn import datasets

        x = torch.as_tensor({"iris": datasets.load_iris, "wine": datasets.load_wine}[name]().data)
        k = 3
    x = x.to(torch.float64)
    return (x - x.mean(0)) / x.std(0), k


def start_model(x, k, seed):
    gmm = GaussianMixture(k, dim=x.shape[1], covariance_type="full").to(torch.float64)
    gmm._initialize((x,), "random", torch.Generator().manual_seed(seed))
    return gmm


def run_to_target(gmm, x, step, target, max_steps, max_seconds):
    """Seconds of ``step()`` calls until log p(X) >= target (None if not reached)."""
    spent, n = 0.0, 0
    while n < max_steps and spent < max_seconds:
        t0 = time.perf_counter()
        step()
        spent += time.perf_counter() - t0
        n += 1
        with torch.no_grad():  # not timed
            ll = float(gmm.log_prob(x).sum())
        if ll >= target:
            return spent, n
    return None, n


def em_stepper(gmm, x):
    em = EM(gmm.model, gmm.guide)
    return lambda: em.step(x)


def svi_stepper(gmm, x, lr, marginal):
    guide = (lambda x: None) if marginal else gmm.guide
    svi = pyro.infer.SVI(gmm.model, guide, pyro.optim.Adam({"lr": lr}),
                         pyro.infer.TraceEnum_ELBO(max_plate_nesting=1))
    return lambda: svi.step(x)


def timed(make_step, start, x, target, repeats, max_steps, max_seconds):
    times, steps = [], []
    for _ in range(repeats):
        gmm = copy.deepcopy(start)
        seconds, n = run_to_target(gmm, x, make_step(gmm, x), target, max_steps, max_seconds)
        if seconds is None:
            return None, n
        times.append(seconds)
        steps.append(n)
    return statistics.median(times), int(statistics.median(steps))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["faithful", "iris"],
                        choices=["faithful", "iris", "wine"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)

    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {args.threads} thread(s); "
          f"target: within 1e-3 nats/point of EM's converged log p(X)")
    rows = []
    for name in args.datasets:
        x, k = load(name)
        n = x.shape[0]
        start = start_model(x, k, args.seed)
        ref = copy.deepcopy(start)
        hist = ref.fit(x, init="given", max_iter=10000, tol=1e-12)
        target = hist.final_log_likelihood - 1e-3 * n
        print(f"\n{name}: N={n}, D={x.shape[1]}, K={k}, start log p(X)/N = "
              f"{float(start.log_prob(x).sum()) / n:.5f}, EM converged {hist.final_log_likelihood / n:.6f}"
              f" after {hist.num_iters} iterations")
        # Warm up each code path once (first-call imports are not a method's cost).
        for make in (em_stepper, lambda g, x: svi_stepper(g, x, 0.01, False),
                     lambda g, x: svi_stepper(g, x, 0.01, True)):
            make(copy.deepcopy(start), x)()
        em_s, em_n = timed(em_stepper, start, x, target, args.repeats, args.max_steps,
                           args.max_seconds)
        results = [("em", "-", em_s, em_n)]
        for marginal in (False, True):
            label = "svi-marginal" if marginal else "svi"
            for lr in LRS:
                s, steps = timed(lambda g, x: svi_stepper(g, x, lr, marginal), start, x, target,
                                 args.repeats, args.max_steps, args.max_seconds)
                results.append((label, lr, s, steps))
        print(f"{'method':<14}{'lr':>6}{'steps':>8}{'seconds':>10}{'x EM time':>11}")
        for label, lr, s, steps in results:
            if s is None:
                print(f"{label:<14}{lr!s:>6}{steps:>8}{'not reached':>21}")
            else:
                print(f"{label:<14}{lr!s:>6}{steps:>8}{s:>10.4f}{s / em_s:>11.1f}")
        for label in ("svi", "svi-marginal"):
            done = [r for r in results if r[0] == label and r[2] is not None]
            if done:
                best = min(done, key=lambda r: r[2])
                rows.append((name, label, best[1], best[2], em_s))
    print("\nsummary (best learning rate per SVI variant)")
    print(f"{'data':<10}{'method':<14}{'lr':>6}{'SVI s':>10}{'EM s':>10}{'SVI/EM':>9}")
    for name, label, lr, s, em_s in rows:
        print(f"{name:<10}{label:<14}{lr!s:>6}{s:>10.4f}{em_s:>10.4f}{s / em_s:>9.1f}")


if __name__ == "__main__":
    main()

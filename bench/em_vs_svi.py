"""Time to converge: exact EM against Pyro's SVI on the same Gaussian mixture and start.

For each data set (standardised) a GaussianMixture starts from one set of parameters
(random responsibilities, then an M-step: scikit-learn's ``init_params="random"``). The
reference is EM run to convergence (change < 1e-12 nats per point): its log-likelihood
L*. Each method then runs from the same start until log p(X) >= L* - 1e-3 * N, and the
wall-clock seconds it needed are reported (median of ``--repeats`` runs, each capped at
``--max-seconds`` CPU seconds; the exact
log p(X) checked after each step is not timed). Wall-clock and CPU seconds of the
process are both printed: on a shared machine the CPU time of this single-threaded run
is the steadier measure. Methods:

- ``em``: ``pyroem.infer.EM`` (E-step by Pyro enumeration + closed-form M-step);
- ``svi``: ``pyro.infer.SVI`` + ``TraceEnum_ELBO`` + Adam on the model's own guide
  (q(z_n) per point, trained jointly with the parameters; q starts at the exact
  posterior of the start, as ``fit(method="svi")`` does), for each learning rate;
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

from pyroem.datasets import load_old_faithful
from pyroem.infer import EM
from pyroem.models import GaussianMixture

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
    """Seconds of ``step()`` calls until log p(X) >= target (None if not reached), steps
    taken, seconds spent and the best log p(X) seen."""
    spent, cpu, n, best = 0.0, 0.0, 0, -float("inf")
    while n < max_steps and cpu < max_seconds:  # CPU time: steadier under shared load
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        spent += time.perf_counter() - t0
        cpu += time.process_time() - c0
        n += 1
        with torch.no_grad():  # not timed
            ll = float(gmm.log_prob(x).sum())
        best = max(best, ll)
        if ll >= target:
            return (spent, cpu), n, spent, best
    return None, n, spent, best


def em_stepper(gmm, x):
    em = EM(gmm.model, gmm.guide)
    return lambda: em.step(x)


def svi_stepper(gmm, x, lr, marginal):
    if marginal:
        guide = lambda x: None
    else:
        guide = gmm.guide
        # q starts at the exact posterior under the starting parameters (as fit(method="svi")
        # does): SVI and EM start from the same (eta, q), ELBO = log p(X); not timed.
        with torch.no_grad():
            EM(gmm.model, gmm.guide).e_step(x)
    svi = pyro.infer.SVI(gmm.model, guide, pyro.optim.Adam({"lr": lr}),
                         pyro.infer.TraceEnum_ELBO(max_plate_nesting=1))
    return lambda: svi.step(x)


def timed(make_step, start, x, target, repeats, max_steps, max_seconds):
    """Median seconds to target over ``repeats`` runs, median steps, median seconds per
    step, best log p(X) (the first run that misses the target ends the repeats)."""
    times, cpus, steps, per_step = [], [], [], []
    for _ in range(repeats):
        gmm = copy.deepcopy(start)
        seconds, n, spent, ll = run_to_target(gmm, x, make_step(gmm, x), target, max_steps,
                                              max_seconds)
        per_step.append(spent / n)
        if seconds is None:
            return None, n, statistics.median(per_step), ll  # the missing run's best
        times.append(seconds[0])
        cpus.append(seconds[1])
        steps.append(n)
    return ((statistics.median(times), statistics.median(cpus)), int(statistics.median(steps)),
            statistics.median(per_step), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["faithful", "iris"],
                        choices=["faithful", "iris", "wine"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=15.0,
                        help="CPU seconds a run may take before it counts as missed")
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
        em_s, em_n, em_ms, _ = timed(em_stepper, start, x, target, args.repeats,
                                     args.max_steps, args.max_seconds)
        results = [("em", "-", em_s, em_n, em_ms, None)]
        for marginal in (False, True):
            label = "svi-marginal" if marginal else "svi"
            for lr in LRS:
                s, steps, ms, best = timed(lambda g, x: svi_stepper(g, x, lr, marginal), start, x,
                                           target, args.repeats, args.max_steps, args.max_seconds)
                results.append((label, lr, s, steps, ms, best))
        print(f"{'method':<14}{'lr':>6}{'steps':>7}{'ms/step':>9}{'wall s':>9}{'x EM':>7}"
              f"{'CPU s':>9}{'x EM':>7}  (if missed: best log p(X)/N)")
        for label, lr, s, steps, ms, best in results:
            head = f"{label:<14}{lr!s:>6}{steps:>7}{1e3 * ms:>9.2f}"
            if s is None:
                print(f"{head}{'missed':>9}{'':>23}  {best / n:.5f} (target {target / n:.5f})")
            else:
                print(f"{head}{s[0]:>9.4f}{s[0] / em_s[0]:>7.1f}{s[1]:>9.4f}{s[1] / em_s[1]:>7.1f}")
        for label in ("svi", "svi-marginal"):
            done = [r for r in results if r[0] == label and r[2] is not None]
            if done:
                best = min(done, key=lambda r: r[2][1])
                rows.append((name, label, best[1], f"{best[2][0]:.3f}", f"{em_s[0]:.3f}",
                             f"{best[2][0] / em_s[0]:.1f}", f"{best[2][1]:.3f}", f"{em_s[1]:.3f}",
                             f"{best[2][1] / em_s[1]:.1f}"))
            else:
                rows.append((name, label, "all", "-", f"{em_s[0]:.3f}", "-",
                             f">{args.max_seconds:g}", f"{em_s[1]:.3f}",
                             f">{args.max_seconds / em_s[1]:.0f}"))
    print("\nsummary (best learning rate per SVI variant, by CPU seconds)")
    print(f"{'data':<10}{'method':<14}{'lr':>6}{'SVI wall':>10}{'EM wall':>9}{'ratio':>7}"
          f"{'SVI CPU':>9}{'EM CPU':>8}{'ratio':>7}")
    for name, label, lr, s, es, r, sc, ec, rc in rows:
        print(f"{name:<10}{label:<14}{lr!s:>6}{s:>10}{es:>9}{r:>7}{sc:>9}{ec:>8}{rc:>7}")


if __name__ == "__main__":
    main()

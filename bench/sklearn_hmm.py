"""A whole fit through the scikit-learn HMM estimator: pyroem.sklearn.GaussianHMM against
hmmlearn.hmm.GaussianHMM.

Run by hand:  python bench/sklearn_hmm.py [--iters 20 --repeats 3 --threads 1]

Both estimators fit with the same options (``--iters`` Baum-Welch iterations exactly:
``tol=0`` for pyroem, ``tol=-inf`` for hmmlearn; k-means initialisation of the means) on
the Old Faithful eruption durations (one sequence, T=272) and on synthetic sequences drawn
from a 5-state HMM (50 sequences of 1000 frames, D=4); prints the median seconds of a fit,
seconds per iteration and the ratio, with the final log-likelihood of each as a sanity
check (the starts differ, so the values need not agree).
"""

import argparse
import statistics
import time

import numpy as np
import torch
from hmmlearn import hmm as hl

from pyroem.datasets import load_old_faithful
from pyroem.sklearn import GaussianHMM


def median_time(fn, repeats):
    fn()  # warm up
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def synthetic(K=5, D=4, B=50, T=1000, seed=0):
    rng = np.random.default_rng(seed)
    gen = hl.GaussianHMM(K, "diag", init_params="")
    gen.startprob_ = np.full(K, 1 / K)
    gen.transmat_ = np.full((K, K), 0.1 / (K - 1)) + 0.9 * np.eye(K) - 0.1 / (K - 1) * np.eye(K)
    gen.means_ = rng.normal(0, 3, size=(K, D))
    gen.covars_ = np.ones((K, D))
    x = np.concatenate([gen.sample(T, random_state=seed + b)[0] for b in range(B)])
    return x, [T] * B


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    faithful = load_old_faithful().numpy()[:, :1]
    x_syn, len_syn = synthetic()
    cases = [("Old Faithful T=272", faithful, None, 2), ("50 x 1000, D=4", x_syn, len_syn, 5)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); diag covariances, "
          f"{args.iters} Baum-Welch iterations, median of {args.repeats}")
    print(f"{'data':20} {'K':>2} {'hmmlearn s':>10} {'pyroem s':>9} {'pyroem/hmmlearn':>15} "
          f"{'hmmlearn logL':>14} {'pyroem logL':>12}")
    for name, x, lengths, k in cases:
        def ref():
            m = hl.GaussianHMM(k, "diag", n_iter=args.iters, tol=-np.inf, random_state=0,
                               init_params="stmc")
            return m.fit(x, lengths).score(x, lengths)

        def ours():
            m = GaussianHMM(k, "diag", n_iter=args.iters, tol=0, random_state=0)
            return m.fit(x, lengths=lengths).score(x, lengths=lengths)

        t_ref, ll_ref = median_time(ref, args.repeats)
        t_ours, ll_ours = median_time(ours, args.repeats)
        print(f"{name:20} {k:2d} {t_ref:10.3f} {t_ours:9.3f} {t_ours / t_ref:15.2f} "
              f"{ll_ref:14.2f} {ll_ours:12.2f}")


if __name__ == "__main__":
    main()

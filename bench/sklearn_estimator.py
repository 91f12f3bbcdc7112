"""A whole fit through the scikit-learn estimator: pyroem.sklearn against scikit-learn.

Run by hand:  python bench/sklearn_estimator.py [--iters 20 --repeats 3]

Fits ``pyroem.sklearn.GaussianMixture`` and ``sklearn.mixture.GaussianMixture`` with the
same options (full covariances, ``tol=0`` so both run exactly ``--iters`` EM iterations,
k-means initialisation, one init) on a small real data set (Old Faithful, N=272) and on
synthetic blobs, and prints the median seconds of a fit, the seconds per iteration and the
ratio. On small data the per-iteration cost is fixed overhead (tracing the Pyro model);
on large data it is arithmetic.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from pyroem.datasets import load_old_faithful
from pyroem.sklearn import GaussianMixture


def median_time(fn, repeats):
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    rng = np.random.default_rng(0)
    faithful = load_old_faithful().numpy()
    blobs = rng.normal(0, 4, size=(8, 8))[rng.integers(0, 8, 20_000)] + rng.normal(size=(20_000, 8))
    cases = [("Old Faithful", faithful, 2), ("blobs N=2e4 D=8", blobs, 8)]
    print(f"fit, full covariance, {args.iters} EM iterations (tol=0), median of {args.repeats}")
    print(f"{'data':18} {'K':>3} {'sklearn s':>10} {'pyroem s':>10} {'pyroem/sklearn':>15} "
          f"{'sklearn s/it':>12} {'pyroem s/it':>12}")
    for name, x, k in cases:
        options = dict(covariance_type="full", tol=0, max_iter=args.iters, random_state=0)
        sk = median_time(lambda: SkGaussianMixture(k, init_params="kmeans", **options).fit(x),
                         args.repeats)
        ours = median_time(lambda: GaussianMixture(k, **options).fit(x), args.repeats)
        print(f"{name:18} {k:3d} {sk:10.3f} {ours:10.3f} {ours / sk:15.2f} "
              f"{sk / args.iters:12.4f} {ours / args.iters:12.4f}")


if __name__ == "__main__":
    main()

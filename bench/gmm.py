"""One EM iteration of a full-covariance GMM: pyroem against scikit-learn.

Run by hand:  python bench/gmm.py [--n 100000 --dim 16 --k 32 --repeats 5]

Prints, for float64 and float32, the median seconds of one E-step plus M-step of
scikit-learn's ``GaussianMixture`` and of ``pyroem.infer.EM.step`` on the same data and
parameters, their ratio, and the fraction of this machine's GEMM throughput (measured in
the same run) that the pyroem iteration reaches.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from pyroem.infer import EM
from pyroem.models import GaussianMixture


def median_time(fn, repeats):
    fn()  # warm up (and fill caches, as every iteration after the first sees them)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gemm_gflops(dtype, n=3000, repeats=5):
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / median_time(lambda: a @ b, repeats) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    n, d, k = args.n, args.dim, args.k
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(k, d))
    x64 = centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))

    print(f"GMM EM iteration, full covariance, N={n} D={d} K={k}, torch threads="
          f"{torch.get_num_threads()}")
    print(f"{'dtype':8} {'sklearn s':>10} {'pyroem s':>10} {'speed-up':>9} {'GFLOP/s':>8} "
          f"{'GEMM GFLOP/s':>12} {'of GEMM':>8}")
    for np_dtype, dtype in ((np.float64, torch.float64), (np.float32, torch.float32)):
        x_np = x64.astype(np_dtype)
        sk = SkGaussianMixture(k, covariance_type="full", max_iter=1, init_params="random_from_data",
                               random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk.fit(x_np)

        def sk_iteration():
            _, log_resp = sk._e_step(x_np)
            sk._m_step(x_np, log_resp)

        t_sk = median_time(sk_iteration, args.repeats)

        x = torch.as_tensor(x_np)
        gmm = GaussianMixture(k, d, "full").to(dtype)
        gmm.weights = torch.as_tensor(sk.weights_, dtype=dtype)
        gmm.means = torch.as_tensor(sk.means_, dtype=dtype)
        gmm.covariances = torch.as_tensor(sk.covariances_, dtype=dtype)
        em = EM(gmm.model, gmm.guide)
        t_em = median_time(lambda: em.step(x), args.repeats)

        # E-step: (N x D^2) @ (D^2 x K) and (N x D) @ (D x K); M-step: the same products
        # transposed with the responsibilities.
        flops = 2 * 2 * n * k * (d * d + d)
        peak = gemm_gflops(dtype)
        rate = flops / t_em / 1e9
        print(f"{str(dtype).split('.')[-1]:8} {t_sk:10.4f} {t_em:10.4f} {t_sk / t_em:8.2f}x "
              f"{rate:8.1f} {peak:12.1f} {rate / peak:8.1%}")


if __name__ == "__main__":
    main()

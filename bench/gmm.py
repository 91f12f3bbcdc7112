"""One EM iteration of a full-covariance GMM: pyroem against scikit-learn, float64 and float32.

Run by hand:  python bench/gmm.py [--n 100000 --dim 16 --k 32 --repeats 5 --threads 2]
              [--settle 0.3] [--pyroem PATH]

Prints, for float64 and float32, the best-of-``--repeats`` seconds (all four runs
interleaved, one warm-up each) of one E-step plus M-step of scikit-learn's
``GaussianMixture`` and of ``pyroem.infer.EM.step`` on the same data and parameters, their
ratio, pyroem's float32 speed-up over its float64, and the fraction of this machine's GEMM
throughput (``torch.mm`` of 3000 x 3000 matrices on the same threads, measured in the same
run) that the pyroem iteration reaches in each dtype.
"""

import argparse
import os
import sys
import time
import warnings

#: seconds to wait before each timed call: numpy's OpenBLAS (scikit-learn) and torch's
#: OpenMP threads spin for a while after a call, and a call that starts while the other
#: library's threads still spin shares the cores with them (on 2 cores pyroem's iteration
#: took 2 to 5 times as long right after scikit-learn's)
SETTLE = 0.3


def best_times(fns, repeats, settle=SETTLE):
    for fn in fns:
        fn()  # warm up (and fill caches, as every iteration after the first sees them)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            time.sleep(settle)
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [min(ts) for ts in times]


def gemm_gflops(torch, dtype, repeats, n=3000):
    a = torch.randn(n, n, dtype=dtype, generator=torch.Generator().manual_seed(0))
    b = torch.randn(n, n, dtype=dtype, generator=torch.Generator().manual_seed(1))
    return 2 * n**3 / best_times([lambda: a @ b], repeats)[0] / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--settle", type=float, default=SETTLE,
                   help="seconds to wait before each timed call (other threads go idle)")
    p.add_argument("--pyroem", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   help="directory to import pyroem from (default: this checkout)")
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.pyroem))
    import numpy as np
    import torch
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from pyroem.infer import EM
    from pyroem.models import GaussianMixture

    torch.set_num_threads(args.threads)
    n, d, k = args.n, args.dim, args.k
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(k, d))
    x64 = centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))

    runs = {}
    for np_dtype, dtype in ((np.float64, torch.float64), (np.float32, torch.float32)):
        x_np = x64.astype(np_dtype)
        sk = SkGaussianMixture(k, covariance_type="full", max_iter=1,
                               init_params="random_from_data", random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk.fit(x_np)

        def sk_iteration(sk=sk, x_np=x_np):
            _, log_resp = sk._e_step(x_np)
            sk._m_step(x_np, log_resp)

        x = torch.as_tensor(x_np)
        gmm = GaussianMixture(k, d, "full").to(dtype)
        gmm.weights = torch.as_tensor(sk.weights_, dtype=dtype)
        gmm.means = torch.as_tensor(sk.means_, dtype=dtype)
        gmm.covariances = torch.as_tensor(sk.covariances_, dtype=dtype)
        em = EM(gmm.model, gmm.guide)
        runs[dtype] = (sk_iteration, lambda em=em, x=x: em.step(x))

    order = [runs[torch.float64][0], runs[torch.float64][1], runs[torch.float32][0],
             runs[torch.float32][1]]
    t_sk64, t64, t_sk32, t32 = best_times(order, args.repeats, args.settle)
    print(f"GMM EM iteration, full covariance, N={n} D={d} K={k}, pyroem from "
          f"{os.path.dirname(sys.modules['pyroem'].__file__)}, torch threads "
          f"{torch.get_num_threads()}, wall-clock best of {args.repeats} (interleaved)")
    print(f"{'dtype':8} {'sklearn s':>10} {'pyroem s':>10} {'vs sklearn':>10} {'GFLOP/s':>8} "
          f"{'GEMM GFLOP/s':>12} {'of GEMM':>8}")
    # E-step: (N x D^2) @ (D^2 x K) and (N x D) @ (D x K); M-step: the same products
    # transposed with the responsibilities.
    flops = 2 * 2 * n * k * (d * d + d)
    for name, dtype, t_sk, t in (("float64", torch.float64, t_sk64, t64),
                                 ("float32", torch.float32, t_sk32, t32)):
        peak = gemm_gflops(torch, dtype, args.repeats)
        rate = flops / t / 1e9
        print(f"{name:8} {t_sk:10.4f} {t:10.4f} {t_sk / t:9.2f}x {rate:8.1f} {peak:12.1f} "
              f"{rate / peak:8.1%}")
    print(f"pyroem float32 vs its float64: {t64 / t32:.2f}x")


if __name__ == "__main__":
    main()

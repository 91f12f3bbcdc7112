"""Memory and speed of EM beyond memory: pyroem against scikit-learn, each measured in a
process of its own.

Run by hand:  python bench/memory.py [--quick] [--memmap-n 10000000] [--only 3]

Three tables (torch.set_num_threads(2); scikit-learn under threadpoolctl's 2 threads):

1. full-covariance GMM, N=50k, D=64, K=8, 5 EM iterations from one start: peak resident
   memory (VmHWM) above the resident size after the imports and the data, pyroem's default
   ``fit`` (chunked: its cached design would take N (D^2 + D + 1) numbers) against
   scikit-learn's ``GaussianMixture``;
2. N=1e5, D=16, K=32: seconds per iteration of 5, best of interleaved repeats, pyroem's
   default ``fit`` (whole: within the memory budget), pyroem forced into chunks
   (``chunk_size=8192``) and scikit-learn, with ratios against scikit-learn;
3. N=1e7 (``--memmap-n``), D=16, K=16, float64 read from a numpy memmap on disk in
   batches of 16384 rows: seconds per pass and peak resident memory;
4. one long sequence, full-covariance GaussianHMM, T=2e5 (``--long-t``), D=8, K=4, 2
   iterations: peak resident memory above imports and data and seconds per iteration,
   whole against ``chunk_size=4096`` frames (the checkpointed E-step).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB -> bytes
    raise RuntimeError(field)


def _reset_peak():
    """Reset VmHWM to the current resident size (Linux: clear_refs 5), so that the peak
    read later is the peak of what follows; returns that current size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def _data(n, dim, k, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(k, dim))
    return centers[rng.integers(0, k, n)] + rng.normal(size=(n, dim))


def _start(x, k):
    """One shared start: k-means++ means of the first 5000 rows, identity covariances."""
    import torch

    from pyroem.models import GaussianMixture
    g = GaussianMixture(k, x.shape[1]).initialize(torch.as_tensor(x[:5000]), seed=0)
    return g.weights.detach().numpy(), g.means.detach().numpy()


def worker_fit(peer, n, dim, k, iters, chunk_size):
    """Fit in this process; print peak RSS above the post-import, post-data peak and the
    seconds per iteration."""
    import numpy as np
    import torch
    torch.set_num_threads(2)
    from sklearn.mixture import GaussianMixture as Sk
    from threadpoolctl import threadpool_limits

    from pyroem.models import GaussianMixture
    x = _data(n, dim, k)
    weights, means = _start(x, k)
    precisions = np.broadcast_to(np.eye(dim), (k, dim, dim)).copy()
    xt = torch.as_tensor(x)
    base = _reset_peak()
    t = time.perf_counter()
    if peer == "sklearn":
        with threadpool_limits(2):
            Sk(k, covariance_type="full", max_iter=iters, tol=0, weights_init=weights,
               means_init=means, precisions_init=precisions).fit(x)
    else:
        g = GaussianMixture(k, dim).to(torch.float64)
        g.weights, g.means = torch.as_tensor(weights), torch.as_tensor(means)
        g.fit(xt, init="given", max_iter=iters, tol=0, chunk_size=chunk_size)
    seconds = (time.perf_counter() - t) / iters
    print(json.dumps({"above": _status("VmHWM") - base, "seconds": seconds}))


class MemmapBatches:
    """Batches of rows of a float64 ``(n, dim)`` file: each batch maps only its own rows
    (a fresh ``np.memmap``), copies them and unmaps, so that resident memory holds one
    batch and not the pages of the whole file."""

    def __init__(self, path, n, dim, rows):
        self.path, self.n, self.dim, self.rows = path, n, dim, rows

    def __iter__(self):
        import numpy as np
        import torch
        for start in range(0, self.n, self.rows):
            count = min(self.rows, self.n - start)
            mm = np.memmap(self.path, dtype=np.float64, mode="r", offset=start * self.dim * 8,
                           shape=(count, self.dim))
            batch = torch.from_numpy(np.array(mm))
            del mm
            yield batch


def worker_memmap(n, dim, k, passes):
    import numpy as np
    import torch
    torch.set_num_threads(2)
    from pyroem.models import GaussianMixture
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.f64")
        rng = np.random.default_rng(0)
        centers = rng.normal(0, 3, size=(k, dim))
        with open(path, "wb") as f:
            for start in range(0, n, 1 << 18):
                m = min(1 << 18, n - start)
                (centers[rng.integers(0, k, m)] + rng.normal(size=(m, dim))).tofile(f)
        base = _reset_peak()
        g = GaussianMixture(k, dim)
        hist = g.fit(MemmapBatches(path, n, dim, 16384), max_iter=passes, tol=0, seed=0)
        per_pass = (hist.seconds[-1]) / passes
        print(json.dumps({"above": _status("VmHWM") - base, "peak": _status("VmHWM"),
                          "seconds": per_pass}))


def worker_long(T, dim, k, chunk, iters):
    import numpy as np
    import torch
    torch.set_num_threads(2)
    from pyroem.models import GaussianHMM
    rng = np.random.default_rng(0)
    states = np.cumsum(rng.random(T) < 0.05) % k  # runs of about 20 frames per state
    x = torch.from_numpy(rng.normal(0, 3, size=(k, dim))[states] + rng.normal(size=(T, dim)))
    m = GaussianHMM(k, dim).initialize(x[:5000], seed=0)
    base = _reset_peak()
    t = time.perf_counter()
    m.fit(x, init="given", max_iter=iters, tol=0, chunk_size=chunk or None)
    seconds = (time.perf_counter() - t) / iters
    print(json.dumps({"above": _status("VmHWM") - base, "seconds": seconds}))


def _child(*args):
    out = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller problems")
    parser.add_argument("--memmap-n", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-t", type=int, default=200_000)
    parser.add_argument("--only", type=int, choices=(1, 2, 3, 4), help="run one table")
    args = parser.parse_args()
    mb = 2**20
    tables = {1: _table_1, 2: _table_2, 3: _table_3, 4: _table_4}
    for number, table in tables.items():
        if args.only in (None, number):
            table(args, mb)


def _table_1(args, mb):
    n1 = 10_000 if args.quick else 50_000
    print(f"1. full GMM N={n1} D=64 K=8, 5 iterations: peak RSS above imports+data (MiB)")
    sk, pe = _child("fit", "sklearn", n1, 64, 8, 5, 0), _child("fit", "pyroem", n1, 64, 8, 5, 0)
    print(f"   scikit-learn {sk['above'] / mb:8.1f}   pyroem {pe['above'] / mb:8.1f}   "
          f"ratio {pe['above'] / sk['above']:.2f}")


def _table_2(args, mb):
    n2 = 20_000 if args.quick else 100_000
    print(f"2. full GMM N={n2} D=16 K=32: seconds per iteration (best of {args.repeats}, "
          "interleaved), 2 threads")
    best = {"sklearn": [], "pyroem": [], "pyroem chunk_size=8192": []}
    for _ in range(args.repeats):
        best["sklearn"].append(_child("fit", "sklearn", n2, 16, 32, 5, 0)["seconds"])
        best["pyroem"].append(_child("fit", "pyroem", n2, 16, 32, 5, 0)["seconds"])
        best["pyroem chunk_size=8192"].append(
            _child("fit", "pyroem", n2, 16, 32, 5, 8192)["seconds"])
    ref = min(best["sklearn"])
    for name, times in best.items():
        print(f"   {name:24s} {min(times):8.4f} s   sklearn/this {ref / min(times):5.2f}x")


def _table_3(args, mb):
    n3 = 1_000_000 if args.quick else args.memmap_n
    print(f"3. GMM N={n3} D=16 K=16 from a memmap, batches of 16384 rows, 2 passes")
    mm = _child("memmap", n3, 16, 16, 2)
    print(f"   {mm['seconds']:.2f} s per pass, peak RSS {mm['peak'] / mb:.0f} MiB "
          f"({mm['above'] / mb:.0f} MiB above imports)")


def _table_4(args, mb):
    T = 20_000 if args.quick else args.long_t
    print(f"4. GaussianHMM one sequence T={T} D=8 K=4 full, 2 iterations: peak RSS above "
          "imports+data (MiB), seconds per iteration")
    rows = {"whole": 0, "chunk_size=4096": 4096}
    for name, chunk in rows.items():
        r = _child("long", T, 8, 4, chunk, 2)
        print(f"   {name:16s} {r['above'] / mb:8.1f} MiB   {r['seconds']:8.2f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.path.insert(0, ROOT)
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "fit":
            chunk = int(rest[5]) or None
            worker_fit(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]), chunk)
        elif kind == "long":
            worker_long(*map(int, rest))
        else:
            worker_memmap(*map(int, rest))
    else:
        main()

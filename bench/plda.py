"""PLDA EM iteration time for 100000 embeddings of dimension 256 from 5000 speakers, and
the fraction of this machine's float64 GEMM throughput it reaches.

    python bench/plda.py [--num-embeddings 100000 --dim 256 --num-speakers 5000 --iters 5]
                         [--threads 1]

Speakers get a random number of embeddings (each embedding's speaker uniform, every
speaker at least one: counts about Poisson(20), ~30 distinct counts). Measured in the
same run:

* GEMM: ``torch.mm`` of two 2048 x 2048 float64 matrices, best of several: the peak
  this machine's BLAS reaches on these cores;
* the data summary (speaker counts, means, within-speaker scatter): computed once per
  data set (an ``N D^2`` GEMM, during ``fit``'s initialisation), cached, then reused by
  every iteration, which therefore costs ``O(S D^2 + G D^3)``, independent of ``N``;
* one EM iteration of ``PLDA.fit`` (E-step, closed-form M-step and writing the exact
  posterior into the guide), steady state (median over iterations 2..k);
* the same split into E-step, M-step and guide write;
* peer: an E-step written the textbook way on the same summaries, one Cholesky of
  ``B + W/n`` per distinct count ``n`` and triangular solves for its speakers.

Flops are counted per operation (GEMM ``2mnk``, Cholesky ``n^3/3``, triangular solve
``n^2`` per right-hand side, QR ``4/3 n^3``, symmetric eigendecomposition with vectors
``9 n^3``, the Golub-Van Loan count) and divided by the measured time.
"""

import argparse
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pyroem.infer import EM
from pyroem.models import PLDA
from pyroem.models.plda import data_summary


def gemm_gflops(n=2048, repeats=5, dtype=torch.float64):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def flops(S, D, G):
    basis = D**3 + 2 * D**3 + 9 * D**3 + D**3 + D**3  # L^-1 Lb, A A^T, eigh, T, L U
    e_step = basis + 2 * S * D * D + 2 * D**3 + 2 * S * D * D  # means in basis, tr(W^-1 Sw), loc
    m_step = 2 * S * D * D + 2 * S * D * D + 2 * 2 * D**3 + 2 * D**3 / 3  # moments, sums of C, chol
    write = G * 4 / 3 * D**3  # QR per distinct count
    return e_step, m_step, write


def per_count_cholesky_e_step(plda, summary):
    """Peer: the textbook E-step on the same summaries, one Cholesky per distinct count."""
    B, W = plda.between_cov, plda.within_cov
    mu = plda.mean.detach() - summary.shift
    lw = torch.linalg.cholesky(W)
    quad_w = torch.cholesky_solve(summary.within_scatter, lw).diagonal().sum()
    total = -0.5 * quad_w
    loc = torch.empty_like(summary.means)
    D = B.shape[0]
    counts, group = torch.unique(summary.counts, return_inverse=True)
    covs = []
    for g, n in enumerate(counts.tolist()):
        idx = (group == g).nonzero().squeeze(-1)
        k = torch.linalg.cholesky(B + W / n)
        dev = summary.means[idx] - mu
        sol = torch.cholesky_solve(dev.T, k)  # (B + W/n)^-1 (xbar - mu)
        loc[idx] = mu + (B @ sol).T
        covs.append(B - B @ torch.cholesky_solve(B, k))
        logdet = 2 * k.diagonal().log().sum() + D * math.log(n)
        total = total - 0.5 * ((dev.T * sol).sum() + idx.numel() * logdet)
        total = total - 0.5 * idx.numel() * (n * D * math.log(2 * math.pi)
                                            + (n - 1) * 2 * lw.diagonal().log().sum())
    return total, loc, covs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-embeddings", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--num-speakers", type=int, default=5000)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); on a shared, loaded machine "
                             "1 thread avoids OpenMP barrier stalls in LAPACK")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    N, D, S = args.num_embeddings, args.dim, args.num_speakers
    dtype = torch.float64

    truth = PLDA(D).to(dtype)
    a = torch.randn(D, D, dtype=dtype) / math.sqrt(D)
    truth.between_cov = a @ a.T + 0.1 * torch.eye(D, dtype=dtype)
    a = torch.randn(D, D, dtype=dtype) / math.sqrt(D)
    truth.within_cov = a @ a.T + 0.1 * torch.eye(D, dtype=dtype)
    labels = torch.cat([torch.arange(S), torch.randint(0, S, (N - S,))])
    counts = torch.bincount(labels, minlength=S)
    x, codes, _ = truth.sample(S, counts, seed=args.seed)
    G = torch.unique(counts).numel()

    peak_before = gemm_gflops()
    threads = torch.get_num_threads()
    print(f"PLDA EM, N={N} embeddings, D={D}, S={S} speakers ({G} distinct counts), float64, "
          f"{threads} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    # one-off data summary (what the first iteration pays on top)
    x_copy, codes_copy = x.clone(), codes.clone()  # not in the cache
    summary_s, _ = timed(lambda: data_summary(x_copy, codes_copy), 1)
    summary_flops = 2 * N * D * D

    plda = PLDA(D).to(dtype)
    hist = plda.fit(x, codes, max_iter=args.iters + 1, tol=0)
    secs = [hist.seconds[0]] + [b - a for a, b in zip(hist.seconds, hist.seconds[1:])]
    iteration_s = statistics.median(secs[1:])

    em = EM(plda.model, plda.guide)
    posterior = em.e_step(x, codes)  # warm, cached summary
    e_s, posterior = timed(lambda: plda.e_step(x, codes), args.iters)
    m_s, _ = timed(lambda: plda.maximize(plda.expected_statistics(posterior, x, codes)), args.iters)
    w_s, _ = timed(lambda: plda.write_posterior(posterior, x, codes), args.iters)
    summary = data_summary(x, codes)
    peer_s, peer = timed(lambda: per_count_cholesky_e_step(plda, summary), args.iters)
    check = plda.e_step(x, codes)
    assert math.isclose(float(peer[0]), float(check.log_evidence), rel_tol=1e-8), \
        (float(peer[0]), float(check.log_evidence))

    # the machine may be shared: the peak is the best GEMM seen before or after the run
    peak = max(peak_before, gemm_gflops())
    print(f"float64 GEMM peak (2048^3, best of 5, before/after): {peak:.1f} GFLOP/s\n")
    fe, fm, fw = flops(S, D, G)
    rows = [
        ("EM iteration (fit, steady state)", iteration_s, fe + fm + fw),
        ("  E-step (diagonalised basis)", e_s, fe),
        ("  M-step (statistics + maximise)", m_s, fm),
        ("  write posterior into guide", w_s, fw),
        ("data summary (once, in fit's init)", summary_s, summary_flops),
    ]
    print(f"{'what':<36} {'seconds':>9} {'GFLOP':>8} {'GFLOP/s':>8} {'of GEMM':>8}")
    for name, s, f in rows:
        print(f"{name:<36} {s:>9.4f} {f / 1e9:>8.2f} {f / s / 1e9:>8.1f} "
              f"{100 * f / s / 1e9 / peak:>7.1f}%")
    print(f"\npeer, same summaries: E-step with one Cholesky per distinct count "
          f"{peer_s:.4f} s; ratio to ours {peer_s / e_s:.1f}x (same log p(X) to 1e-8)")
    print(f"log p(X) per embedding after {hist.num_iters} iterations: "
          f"{hist.final_log_likelihood / N:.4f}")


if __name__ == "__main__":
    main()

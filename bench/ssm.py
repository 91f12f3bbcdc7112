"""Linear-Gaussian state-space model: pyroem's ``LinearGaussianSSM`` against pykalman.

Run by hand:  python bench/ssm.py [--lengths 10000 100000 --state-dim 2 --obs-dim 2
                                   --repeats 3 --threads 1]

For one sequence of each length (sampled from a fixed model), prints the best-of-N
wall-clock seconds (runs interleaved, so that load from other processes hits both alike)
of

* the smoother: pykalman's ``KalmanFilter.smooth`` against ``LinearGaussianSSM.smooth``
  (filter + RTS smoother, means and covariances returned);
* one EM iteration of all six parameters: pykalman's ``KalmanFilter.em(n_iter=1)``
  against ``pyroem.infer.EM.step`` (E-step, the exact posterior written into the guide,
  closed-form M-step), both from the same start,

in float64 (and pyroem in float32), with the speed-ups and the largest difference of the
results (smoothed means; parameters after the iteration). pykalman runs its recursions
in NumPy, one Python step per frame; pyroem shares the data-independent covariance
recursion across sequences and stops it at its steady state, and solves the mean
recursions in O(sqrt T) Python steps (pyroem.models.ssm.kalman).

Threads: one by default. Both libraries work on matrices of a few entries, where a second
intra-op thread cannot help; on a loaded machine it hurts (on the shared 2-core machine
these numbers were taken on, a 2x2 ``tril`` with two torch threads had a p99 latency of
16 ms, against 3 us with one). pykalman's NumPy calls are single-threaded at this size.
"""

import argparse
import time

import numpy as np
import torch
from pykalman import KalmanFilter

from pyroem.infer import EM
from pyroem.models import LinearGaussianSSM

TRUE = {"transition_matrix": [[0.95, 0.1], [-0.1, 0.9]],
        "observation_matrix": [[1.0, 0.3], [0.2, 1.0]],
        "transition_cov": [[0.1, 0.02], [0.02, 0.1]],
        "observation_cov": [[0.5, 0.0], [0.0, 0.4]],
        "initial_mean": [0.0, 0.0], "initial_cov": [[1.0, 0.0], [0.0, 1.0]]}
PYKALMAN = {"transition_matrix": "transition_matrices",
            "observation_matrix": "observation_matrices",
            "transition_cov": "transition_covariance",
            "observation_cov": "observation_covariance",
            "initial_mean": "initial_state_mean", "initial_cov": "initial_state_covariance"}


def start_values(S, O, seed=1):
    """A fixed start that is not the truth (for EM)."""
    rng = np.random.default_rng(seed)
    return {"transition_matrix": 0.5 * np.eye(S), "observation_matrix": rng.normal(size=(O, S)),
            "transition_cov": np.eye(S), "observation_cov": np.eye(O),
            "initial_mean": np.zeros(S), "initial_cov": np.eye(S)}


def true_values(S, O, seed=0):
    if (S, O) == (2, 2):
        return {k: np.asarray(v) for k, v in TRUE.items()}
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(S, S)))
    return {"transition_matrix": 0.95 * q, "observation_matrix": rng.normal(size=(O, S)),
            "transition_cov": 0.1 * np.eye(S), "observation_cov": 0.5 * np.eye(O),
            "initial_mean": np.zeros(S), "initial_cov": np.eye(S)}


def best_times(fns, repeats, warm):
    """Best-of-``repeats`` seconds of each function, interleaved; the functions flagged in
    ``warm`` are called once before (pykalman has no warm-up effects and takes long)."""
    for fn, w in zip(fns, warm):
        if w:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [min(ts) for ts in times]


def ours(values, dtype):
    m = LinearGaussianSSM(len(values["initial_mean"]), len(values["observation_cov"]),
                          reg_covar=0).to(dtype)
    m.set_parameters(**values)
    return m


def peer(values):
    return KalmanFilter(**{PYKALMAN[k]: np.asarray(v, dtype=float) for k, v in values.items()})


def em_step(values, x, dtype):
    m = ours(values, dtype)
    args = m.prepare(x.to(dtype))
    em = EM(m.model, m.guide)

    def step():
        m.set_parameters(**values)
        em.step(*args)
        return m
    return step


def peer_em_step(values, X):
    return lambda: peer(values).em(X, n_iter=1, em_vars=list(PYKALMAN.values()))


def row(T, S, O, repeats):
    truth, start = true_values(S, O), start_values(S, O)
    x, _ = ours(truth, torch.float64).sample(T, seed=0)
    X = x.numpy()
    m64, m32 = ours(truth, torch.float64), ours(truth, torch.float32)
    x32 = x.float()
    t_smooth = best_times([lambda: peer(truth).smooth(X), lambda: m64.smooth(x),
                           lambda: m32.smooth(x32)], repeats, warm=[False, True, True])
    diff_smooth = np.abs(m64.smooth(x)[0].numpy() - peer(truth).smooth(X)[0]).max()
    fns = [peer_em_step(start, X), em_step(start, x, torch.float64),
           em_step(start, x, torch.float32)]
    t_em = best_times(fns, repeats, warm=[False, True, True])
    fitted_peer, fitted = fns[0](), fns[1]()
    diff_em = max(np.abs(getattr(fitted, k).detach().numpy() - getattr(fitted_peer, v)).max()
                  for k, v in PYKALMAN.items())
    return t_smooth, diff_smooth, t_em, diff_em


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--state-dim", type=int, default=2)
    p.add_argument("--obs-dim", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    S, O = args.state_dim, args.obs_dim
    print(f"LinearGaussianSSM S={S} O={O}, one sequence, torch threads={torch.get_num_threads()}, "
          f"best of {args.repeats} interleaved, wall seconds")
    print(f"{'T':>7} {'what':10} {'pykalman s':>11} {'pyroem f64 s':>13} {'ratio':>7} "
          f"{'pyroem f32 s':>13} {'ratio':>7} {'max |diff| f64':>15}")
    for T in args.lengths:
        t_smooth, d_smooth, t_em, d_em = row(T, S, O, args.repeats)
        for what, (tp, t64, t32), diff in (("smoother", t_smooth, d_smooth),
                                            ("EM iter", t_em, d_em)):
            print(f"{T:>7} {what:10} {tp:11.3f} {t64:13.4f} {tp / t64:6.0f}x "
                  f"{t32:13.4f} {tp / t32:6.0f}x {diff:15.2e}", flush=True)


if __name__ == "__main__":
    main()

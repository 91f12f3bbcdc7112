"""``pyroem demo``: the three model families on bundled real data.

- a Gaussian mixture on the Old Faithful eruptions (duration, waiting time);
- a Gaussian HMM on the sequence of Old Faithful eruption durations (short and long
  eruptions alternate: the data are in time order);
- PLDA speaker verification on the Japanese Vowels utterances (the data ship in the
  ``sktime`` wheel: ``pip install "pyroem[examples]"``).

Each model is fitted by exact EM, Viterbi (hard) EM and SVI from the same start; the
table reports iterations, seconds, the final :math:`\\log p(X)` per item and the seconds
each method took to come within :math:`10^{-3}` nats per item of EM's final value (the
column ``s to EM-1e-3/N``; its meaning is printed under each table). The figures
(EM bound, convergence, mixture ellipses, decoded states, DET curves) are written to
``out_dir``.
"""

import os

import numpy as np
import torch

from pyroem import plot
from pyroem.datasets import load_japanese_vowels, load_old_faithful
from pyroem.infer import compare
from pyroem.metrics import eer, min_dcf, plot_det
from pyroem.models import PLDA, GaussianHMM, GaussianMixture
from pyroem.preprocessing import LDA, Center, LengthNorm, Pipeline


def _seconds_to(hist, target, n):
    """Seconds until ``log p(X)`` came within 1e-3 nats per item of ``target``."""
    for ll, s in zip(hist.records["log_evidence"], hist.seconds):
        if ll >= target - 1e-3 * n:
            return f"{s:.3f}"
    return "not reached"


def _table(title, histories, n):
    # the exact log p(X) at the start of each method's last iteration (for Viterbi the
    # true evidence, not its objective log p(X, Z_hat))
    log_evidence_final = {m: h.records["log_evidence"][-1] for m, h in histories.items()}
    target = log_evidence_final["em"]
    print(title)
    print(f"  {'method':8} {'iters':>6} {'seconds':>8} {'log p(X)/N':>11} {'s to EM-1e-3/N':>15}")
    for method, hist in histories.items():
        print(f"  {method:8} {hist.num_iters:6d} {hist.seconds[-1]:8.3f} "
              f"{log_evidence_final[method] / n:11.5f} {_seconds_to(hist, target, n):>15}")
    print("  (s to EM-1e-3/N: seconds until log p(X) came within 1e-3 nats per item of EM's "
          "final value)")


def _fit_three(model, data, seed, svi_iters, lr, progress):
    histories = compare(model, *data, methods=("em", "viterbi"), max_iter=200, tol=1e-7,
                        seed=seed, record_decomposition=False, progress=progress)
    histories.update(compare(model, *data, methods=("svi",), max_iter=svi_iters, tol=0.0,
                             seed=seed, lr=lr, record_decomposition=False, progress=progress))
    return histories


def gmm_part(out_dir, seed, progress=False):
    x = load_old_faithful()
    x = (x - x.mean(0)) / x.std(0)  # standardised: one tolerance suits both columns
    n = len(x)
    histories = _fit_three(GaussianMixture(2, 2, "full"), (x,), seed, 300, 0.05, progress)
    fitted = GaussianMixture(2, 2, "full")
    fitted.fit(x, seed=seed, max_iter=200, tol=1e-7)
    _table("Gaussian mixture (K=2, full) on Old Faithful (272 eruptions, standardised)",
           histories, n)
    start = GaussianMixture(2, 2, "full")
    start.fit(x, max_iter=1, tol=0, seed=seed)  # a start one EM step in
    plot.plot_em_bound(start, x, path=os.path.join(out_dir, "gmm_em_bound.png"))
    plot.plot_convergence(histories, path=os.path.join(out_dir, "gmm_convergence.png"),
                          num_items=n)
    plot.plot_mixture(fitted, x, path=os.path.join(out_dir, "gmm_components.png"),
                      labels=("eruption duration (standardised)", "waiting time (standardised)"))


def hmm_part(out_dir, seed, progress=False, svi_iters=150):
    durations = load_old_faithful()[:, :1]  # (272, 1), in time order
    n = len(durations)
    model = GaussianHMM(2, 1, "full")
    histories = _fit_three(model, (durations,), seed, svi_iters, 0.05, progress)
    fitted = GaussianHMM(2, 1, "full")
    fitted.fit(durations, seed=seed, max_iter=200, tol=1e-7)
    _table("Gaussian HMM (2 states) on the sequence of Old Faithful eruption durations",
           histories, n)
    order = fitted.means.detach()[:, 0].argsort()
    trans = fitted.trans_probs.detach()[order][:, order]
    print(f"  EM: state means {fitted.means.detach()[order, 0].numpy().round(3)} min, "
          f"p(long | short) = {trans[0, 1]:.3f}, p(long | long) = {trans[1, 1]:.3f}")
    _, states = fitted.decode(durations)
    _plot_states(durations[:, 0].numpy(), np.asarray(states).reshape(-1),
                 os.path.join(out_dir, "hmm_states.png"))


def _plot_states(series, states, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot()
    t = np.arange(len(series))
    ax.plot(t, series, color="0.7", lw=0.8, label="duration")
    short = series[states == 0].mean() <= series[states == 1].mean() if (states == 1).any() else True
    for k, (name, color, marker) in enumerate((("short", "tab:blue", "o"),
                                               ("long", "tab:red", "^"))):
        state = k if short else 1 - k
        mask = states == state
        ax.scatter(t[mask], series[mask], color=color, marker=marker, s=14,
                   label=f"decoded state {state} ({name} eruptions)")
    ax.set_xlabel("eruption (in time order)")
    ax.set_ylabel("duration (min)")
    ax.set_title("Old Faithful: Viterbi-decoded HMM states")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plda_part(out_dir, seed, progress=False):
    try:
        x_train, y_train, x_eval, y_eval = load_japanese_vowels()
    except ImportError as e:
        print(f"PLDA part skipped: {e}")
        return
    pipeline = Pipeline(Center(), LDA(8), LengthNorm()).fit(x_train, y_train)
    e_train, e_eval = pipeline.transform(x_train), pipeline.transform(x_eval)
    rows = {}
    for method in ("em", "svi"):
        plda = PLDA(e_train.shape[1])
        hist = plda.fit(e_train, y_train, method=method, max_iter=200 if method == "em" else 300,
                        tol=1e-7 if method == "em" else 0.0, seed=seed, progress=progress)
        rows[method] = (hist, float(plda.log_prob(e_train, y_train).sum()), plda)
    n = len(y_train)
    print("PLDA on Japanese Vowels (9 speakers; 270 training utterances, LDA to 8 dims)")
    print(f"  {'method':8} {'iters':>6} {'seconds':>8} {'log p(X)/N':>11}")
    for method, (hist, ll, _) in rows.items():
        print(f"  {method:8} {hist.num_iters:6d} {hist.seconds[-1]:8.3f} {ll / n:11.5f}")
    plda = rows["em"][2]
    # Each speaker enrolled from 3 evaluation utterances; every other one is a trial.
    rng = np.random.default_rng(seed)
    labels = y_eval.numpy()
    enroll_sets, test_mask, speakers = [], np.ones(len(labels), bool), np.unique(labels)
    for s in speakers:
        idx = rng.permutation(np.flatnonzero(labels == s))[:3]
        enroll_sets.append(e_eval[idx])
        test_mask[idx] = False
    target = torch.as_tensor(speakers[:, None] == labels[test_mask][None, :])
    scores = plda.score_matrix(enroll_sets, e_eval[torch.as_tensor(test_mask)])
    tar, non = scores[target], scores[~target]
    print(f"  verification, 3 enrolment utterances: {int(target.sum())} target and "
          f"{int((~target).sum())} non-target trials, EER {100 * eer(tar, non):.2f}%, "
          f"minDCF(0.01) {min_dcf(tar, non, p_target=0.01):.3f}")
    plot_det(tar, non, path=os.path.join(out_dir, "plda_det.png"), label="PLDA, n=3",
             title="PLDA on Japanese Vowels: DET curve, 3 enrolment utterances")


def run(out_dir="pyroem-demo", seed=0, progress=False):
    """Fit the three families, print the tables, write the figures into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    # The demo's problems are small: one intra-op thread avoids threading overhead that
    # dominates tensor operations of this size.
    torch.set_num_threads(1)
    for part in (gmm_part, hmm_part, plda_part):
        part(out_dir, seed, progress)
        print()
    print(f"figures written to {out_dir}/")
    return 0

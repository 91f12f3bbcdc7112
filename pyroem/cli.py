"""The ``pyroem`` command line."""

import argparse
import sys

import torch

from pyroem.datasets import load_old_faithful
from pyroem.models import GaussianMixture


def _demo(args):
    x = load_old_faithful(torch.float64)
    # standardise so that one tolerance suits both columns (minutes and tens of minutes)
    x = (x - x.mean(0)) / x.std(0)
    rows = []
    for method in ("em", "viterbi", "svi"):
        gmm = GaussianMixture(2, 2, "full")
        kwargs = {"max_iter": 300, "lr": 0.05} if method == "svi" else {"max_iter": 200}
        hist = gmm.fit(x, method=method, seed=args.seed, tol=1e-6, progress=not args.quiet,
                       **kwargs)
        rows.append((method, hist.num_iters, hist.seconds[-1],
                     float(gmm.log_prob(x).sum()) / len(x), gmm))
    print("Gaussian mixture (K=2, full covariance) on Old Faithful (272 eruptions, standardised)")
    print(f"{'method':8} {'iters':>6} {'seconds':>8} {'log p(X)/N':>11}")
    for method, iters, secs, ll, _ in rows:
        print(f"{method:8} {iters:6d} {secs:8.3f} {ll:11.5f}")
    gmm = rows[0][-1]
    print("EM weights:", [round(w, 4) for w in gmm.weights.detach().tolist()])
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="pyroem", description="Exact EM for Pyro models.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit the built-in models on bundled real data")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        print(f"pyroem: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

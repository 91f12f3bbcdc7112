r"""
``pyroem fit|score|sample plda``: the two-covariance PLDA family, or with ``--rank R``
the simplified PLDA whose speaker subspace has rank ``R``. ``DATA`` is
``(N, 1 + D)``, the speaker label in the first column (an integer or a name) and one
embedding per row. ``score`` gives one number per row,
:math:`\log p(x_n \mid x_{s,1}, \dots, x_{s,n-1})`: the row given the rows of its speaker
above it, so that a speaker's rows add up to :math:`\log p(X_s)` (the chain rule); with ``--trials`` it scores a verification trial
list instead (:mod:`pyroem.cli.trials`). ``sample`` draws speakers with five embeddings
each, the label column first.
"""

import sys

import numpy as np
import torch

from pyroem.cli import trials
from pyroem.cli.family import Family
from pyroem.cli.io import CLIError, param_arrays, param_options, read_labelled
from pyroem.models import PLDA
from pyroem.models.plda import LowRankPLDA, encode_labels


class PLDAFamily(Family):
    name = "plda"
    model_class = PLDA
    checkpoint_classes = (LowRankPLDA,)
    help = ("two-covariance PLDA (or simplified PLDA with --rank): DATA is (N, 1 + D), the "
            "speaker label in the first column and one embedding per row")

    def add_fit_arguments(self, parser):
        parser.add_argument("--reg-covar", type=float, default=1e-6,
                            help="added to covariance diagonals (default 1e-6)")
        parser.add_argument("--rank", type=int, default=None, metavar="R",
                            help="simplified PLDA: a speaker subspace of rank R, 1 <= R <= D "
                                 "(default: the two-covariance model, full rank)")

    def read_data(self, path, args):
        """``(embeddings (N, D), labels (N,))``: the labels numbers (integers) or text."""
        labels, x = read_labelled(path, "embedding")
        if labels.dtype.kind == "f":
            fractional = np.flatnonzero(labels != np.round(labels))
            if fractional.size:
                row = fractional[0]
                raise CLIError(f"{path}: the first column is the speaker label column, but "
                               f"row {row + 1} holds {labels[row]:g}, neither an integer nor a "
                               "name: does DATA have a label column?")
        return x, labels

    def build(self, data, args):
        x, labels = data
        speakers = len(np.unique(labels))
        if speakers < 2 or speakers == len(labels):
            found = ("only one speaker" if speakers < 2 else
                     f"{speakers} speakers for {len(labels)} rows (one embedding each)")
            raise CLIError(f"{args.data}: the label column (column 1) gives {found}; fitting "
                           "PLDA needs at least 2 speakers and one with two or more "
                           "embeddings: is the first column the speaker label?")
        if args.rank is not None and not 1 <= args.rank <= x.shape[1]:
            raise CLIError(f"--rank must be between 1 and the embedding dimension "
                           f"{x.shape[1]}, got {args.rank}")
        return PLDA(x.shape[1], reg_covar=args.reg_covar, rank=args.rank)

    def summary(self, model):
        between = np.linalg.eigvalsh(model.between_cov.numpy())[::-1]
        within = np.linalg.eigvalsh(model.within_cov.numpy())[::-1]
        rank = [] if model.rank is None else [f"speaker subspace rank: {model.rank}"]
        return rank + [f"mean: {np.array2string(model.mean.detach().numpy(), precision=4)}",
                       f"between_cov eigenvalues: {np.array2string(between, precision=4)}",
                       f"within_cov eigenvalues: {np.array2string(within, precision=4)}"]

    def params(self, model):
        params = {"family": self.name, "reg_covar": model.reg_covar,
                  "mean": model.mean.detach().numpy(),
                  "between_cov": model.between_cov.numpy(),
                  "within_cov": model.within_cov.numpy()}
        if model.rank is not None:  # V itself: between_cov = V V^T does not fix its sign
            params.update(rank=model.rank, speaker_loadings=model.speaker_loadings.numpy())
        return params

    def from_params(self, params):
        mean, between, within = param_arrays(params, "mean", "between_cov", "within_cov")
        reg_covar, rank = param_options(params, reg_covar=1e-6, rank=0)  # 0: full rank
        if mean.ndim != 1:
            raise CLIError(f"parameter file: mean must be (D,), got {mean.shape}")
        rank = rank or None
        model = PLDA(mean.shape[0], reg_covar=reg_covar, rank=rank).to(torch.float64)
        model.mean = torch.as_tensor(mean)
        if rank is None:
            model.between_cov = torch.as_tensor(between)
        else:
            (loadings,) = param_arrays(params, "speaker_loadings")
            model.speaker_loadings = torch.as_tensor(loadings)
        model.within_cov = torch.as_tensor(within)
        return model

    def score(self, model, data):
        r"""Per row, :math:`\log p(x_n | x_{s,1..n-1})`: the log-likelihood of each row given
        the rows of its speaker above it (a speaker's rows sum to :math:`\log p(X_s)`)."""
        if data[0].shape[1] != model.dim:
            raise CLIError(f"PLDA data for this model needs a label column and {model.dim} "
                           f"embedding columns ({model.dim + 1} in all), got "
                           f"{data[0].shape[1] + 1} columns")
        labels = data[1].tolist() if hasattr(data[1], "tolist") else list(data[1])
        x, (codes, _) = torch.as_tensor(data[0]), encode_labels(labels)
        # every prefix x_{s,1..j} of every speaker as a pseudo-speaker of its own
        rows, prefix, first = [], [], []
        for s in range(int(codes.max()) + 1):
            idx = torch.nonzero(codes == s)[:, 0]
            for j in range(1, len(idx) + 1):
                first.append(j == 1)
                rows.append(idx[:j])
                prefix += [len(first) - 1] * j
        with torch.no_grad():
            joint = model.log_prob(x[torch.cat(rows)], torch.tensor(prefix))
        first = torch.tensor(first)
        previous = torch.cat([joint.new_zeros(1), joint[:-1]])
        conditional = torch.where(first, joint, joint - previous)
        order = torch.cat([r[-1:] for r in rows])  # the row each prefix ends with
        return conditional[order.argsort()].numpy()

    def add_score_arguments(self, parser):
        parser.add_argument("--trials", metavar="FILE",
                            help="score a trial list ('ENROLL_ID TEST_ID [target|nontarget]' "
                                 "per line): DATA's first column is then the row id")
        parser.add_argument("--enroll", metavar="FILE",
                            help="with --trials: the enrolment rows (default: DATA)")
        parser.add_argument("--cohort", metavar="FILE",
                            help="with --trials: s-normalise against these rows (id column first)")
        parser.add_argument("--top-k", type=int, default=None,
                            help="with --cohort: adaptive s-norm over the top K cohort scores")

    def score_trials(self, model, args):
        """Score a trial list; a summary line on stderr when the trials carry keys."""
        if args.top_k is not None and args.cohort is None:
            raise CLIError("--top-k needs --cohort")
        enroll, test, keys, scores = trials.score_trials(
            model, args.trials, args.data, args.enroll, args.cohort, args.top_k)
        trials.write_trial_scores(enroll, test, scores, args.output)
        if keys is not None:
            print(trials.summary(keys, scores), file=sys.stderr)
        return 0

    def sample(self, model, num_samples, seed=None):
        # num_samples speakers with 5 embeddings each; the label column first
        x, labels, _ = model.sample(num_samples, 5, seed=seed)
        return np.column_stack([labels.numpy(), x.numpy()])

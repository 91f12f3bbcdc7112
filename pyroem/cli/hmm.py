"""
``pyroem fit|score|sample hmm``: the Gaussian hidden Markov model family. ``DATA`` is
``(T, D)``, one frame per row in time order: one sequence, or several one after another,
cut by ``--lengths FILE`` or by a leading id column (``--ids``); the model sees them
padded to ``(B, T_max, D)`` with their lengths. ``score`` gives one log-likelihood per
sequence, ``sample`` one sequence of ``N`` frames, and ``--plot`` the frames coloured by
their Viterbi state.
"""

import numpy as np
import torch

from pyroem.cli.family import Family, add_gaussian_options, gaussian_params, mean_lines, save_figure
from pyroem.cli.io import CLIError, param_arrays, param_options, read_array
from pyroem.models import GaussianHMM


class HMMFamily(Family):
    name = "hmm"
    model_class = GaussianHMM
    help = ("Gaussian hidden Markov model: DATA is (T, D), one frame per row in time order; "
            "one sequence, or several with --lengths FILE or --ids")

    def add_fit_arguments(self, parser):
        parser.add_argument("--states", "-k", type=int, default=2, metavar="K",
                            help="number of hidden states (default 2)")
        add_gaussian_options(parser, " of the emissions")

    def add_data_arguments(self, parser):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--lengths", metavar="FILE",
                           help="sequence lengths (.npy or CSV, one integer each, summing to "
                                "the number of rows of DATA): the rows are those sequences "
                                "one after another")
        group.add_argument("--ids", action="store_true",
                           help="the first column of DATA is a sequence id; each run of "
                                "equal consecutive ids is one sequence")

    def read_data(self, path, args):
        """``(padded (B, T, D), lengths (B,))`` from the rows of ``path``."""
        x = read_array(path)
        x = x.reshape(-1, 1) if x.ndim == 1 else x
        x, lengths = _split_sequences(x, path, args)
        padded = np.zeros((len(lengths), int(lengths.max()), x.shape[1]))
        for b, (start, n) in enumerate(zip(np.cumsum(lengths) - lengths, lengths)):
            padded[b, :n] = x[start:start + n]
        return padded, lengths

    def build(self, data, args):
        return GaussianHMM(args.states, data[0].shape[-1], args.covariance_type,
                           args.reg_covar)

    def summary(self, model):
        lines = [f"start_probs: {np.array2string(model.start_probs.detach().numpy(), precision=4)}"]
        for k, row in enumerate(model.trans_probs.detach().numpy()):
            lines.append(f"trans_probs[{k}]: {np.array2string(row, precision=4)}")
        return lines + mean_lines(model)

    def params(self, model):
        return {"family": self.name, "start_probs": model.start_probs.detach().numpy(),
                "trans_probs": model.trans_probs.detach().numpy(), **gaussian_params(model)}

    def from_params(self, params):
        start, trans, means, covariances = param_arrays(
            params, "start_probs", "trans_probs", "means", "covariances")
        covariance_type, reg_covar = param_options(params, covariance_type="full",
                                                   reg_covar=1e-6)
        if means.ndim != 2 or start.shape != (means.shape[0],):
            raise CLIError(f"parameter file: start_probs {start.shape} and means {means.shape} "
                           "do not fit (K,) and (K, D)")
        model = GaussianHMM(means.shape[0], means.shape[1], covariance_type, reg_covar)
        model = model.to(torch.float64)
        try:  # the model's setters check shapes, signs and that rows sum to one
            model.start_probs = torch.as_tensor(start)
            model.trans_probs = torch.as_tensor(trans)
            model.means = torch.as_tensor(means)
            model.covariances = torch.as_tensor(covariances)
        except ValueError as e:
            raise CLIError(f"parameter file: {e}") from None
        return model

    def score(self, model, data):
        r"""Per-sequence :math:`\log p(x_{1:T_b})` (one value per sequence)."""
        return model.log_prob(*data).numpy()

    def sample(self, model, num_samples, seed=None):
        """One sequence of ``num_samples`` frames (the model's seed drawn from torch's
        generator, which :func:`~pyroem.cli.commands.main` seeds with ``seed``)."""
        x, _ = model.sample(num_samples, seed=int(torch.randint(2**31 - 1, ())))
        return x.numpy()

    def plot(self, model, data, path):
        from matplotlib.figure import Figure

        padded, lengths = data
        states = model.predict(torch.as_tensor(padded), torch.as_tensor(lengths)).numpy()
        mask = np.arange(padded.shape[1]) < lengths[:, None]
        x, z = padded[mask], states[mask]  # the frames in file order
        D = min(x.shape[1], 4)
        fig = Figure(figsize=(8, 1.2 + 1.6 * D))
        axes = fig.subplots(D, 1, sharex=True, squeeze=False)[:, 0]
        t = np.arange(len(x))
        markers = "o^sDvP*Xh<>p"
        for d, ax in enumerate(axes):
            ax.plot(t, x[:, d], color="0.75", lw=0.8, zorder=1)
            for k in np.unique(z):  # one marker and colour per state: a legend, grey print
                ax.scatter(t[z == k], x[z == k, d], color=f"C{k % 10}", marker=markers[k % 12],
                           s=10, zorder=2, label=f"state {k}" if d == 0 else None)
            for end in np.cumsum(lengths)[:-1]:  # sequence boundaries
                ax.axvline(end - 0.5, color="k", lw=0.6, ls=":")
            ax.set_ylabel(f"x[{d}]")
        axes[0].set_title(f"Gaussian HMM, K={model.num_states}: frames coloured by Viterbi state")
        axes[0].legend(fontsize=7, ncol=min(model.num_states, 6), loc="upper right")
        axes[-1].set_xlabel("frame (in file order; dotted lines end sequences)")
        fig.tight_layout()
        save_figure(fig, path)


def _split_sequences(x, path, args):
    """The frames (without an id column) and the sequence lengths, from ``--ids``,
    ``--lengths FILE`` or, without either, one sequence of all rows."""
    if getattr(args, "ids", False):
        if x.shape[1] < 2:
            raise CLIError(f"{path}: with --ids, DATA needs an id column and at least "
                           f"one data column, got {x.shape[1]} column")
        ids, x = x[:, 0], x[:, 1:]
        starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        lengths = np.diff(np.concatenate([[0], starts, [len(ids)]]))
    elif getattr(args, "lengths", None):
        lengths = read_array(args.lengths).reshape(-1)
        if np.any(lengths != np.round(lengths)) or np.any(lengths < 1):
            raise CLIError(f"{args.lengths}: lengths must be integers >= 1")
        lengths = lengths.astype(np.int64)
        if lengths.sum() != x.shape[0]:
            raise CLIError(f"{args.lengths}: lengths sum to {lengths.sum()}, but {path} "
                           f"has {x.shape[0]} rows")
    else:
        lengths = np.array([x.shape[0]])
    return x, lengths

"""
The ``pyroem`` command line::

    pyroem demo
    pyroem fit gmm DATA [--components K] [--covariance-type full] [--method em]
                        [--output PARAMS.npz|.json] [--plot FIG.png]
    pyroem score gmm PARAMS DATA [--output FILE]
    pyroem sample gmm PARAMS N [--seed S] [--output FILE]
    pyroem fit hmm DATA [--states K] [--lengths FILE | --ids] [...]   (also score, sample)

``DATA`` is a ``.npy`` array or a CSV file (comma-separated numbers, one item per row; a
header row and ``#`` comment lines are skipped). Model families are registered in
:data:`FAMILIES`: each knows its fit options, how to build and fit a model, how to save
and load its parameters and how to score and sample, so a family is added in one place.

Errors (bad files, malformed data, bad options) are reported as one line on stderr with
exit status 2; set ``PYROEM_DEBUG=1`` to see the traceback instead.
"""

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from pyroem.models import PLDA, GaussianHMM, GaussianMixture
from pyroem.models.gmm import COVARIANCE_TYPES


class CLIError(ValueError):
    """A user error, reported as one line."""


# ---------------------------------------------------------------------------- files
def read_array(path):
    """
    Read a 1-D or 2-D numeric array from ``path`` (``.npy``, else CSV) as float64.

    :raises CLIError: naming the file and the problem (missing, unreadable, ragged,
        non-numeric, empty, NaN/inf).
    """
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CLIError(f"{path}: not a readable .npy array ({e})") from None
        if values.dtype.kind not in "biuf":
            raise CLIError(f"{path}: expected a numeric array, got dtype {values.dtype}")
        values = values.astype(np.float64)
        if values.ndim not in (1, 2):
            raise CLIError(f"{path}: expected a 1-D or 2-D array, got shape {values.shape}")
    else:
        values = _read_csv(path)
    if values.shape[0] == 0:
        raise CLIError(f"{path}: no data rows")
    bad = ~np.isfinite(values)
    if bad.any():
        index = np.argwhere(bad)[0]
        where = f"row {index[0] + 1}" + (f", column {index[1] + 1}" if values.ndim == 2 else "")
        raise CLIError(f"{path}: NaN or inf at {where}")
    return values


def _read_csv(path):
    rows, width, header_allowed = [], None, True
    try:
        with open(path, newline="") as f:
            for lineno, fields in enumerate(csv.reader(f), 1):
                if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                    continue
                try:
                    row = [float(v) for v in fields]
                except ValueError:
                    if header_allowed:  # the first non-comment line may name the columns
                        header_allowed = False
                        continue
                    bad = next(v for v in fields if not _is_number(v))
                    raise CLIError(f"{path}, line {lineno}: {bad.strip()!r} is not a "
                                   "number") from None
                header_allowed = False
                if width is None:
                    width = len(row)
                elif len(row) != width:
                    raise CLIError(f"{path}, line {lineno}: expected {width} values, "
                                   f"got {len(row)}")
                rows.append(row)
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text (CSV) file; use .npy for binary arrays") from None
    except csv.Error as e:
        raise CLIError(f"{path}: malformed CSV ({e})") from None
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)


def _is_number(v):
    try:
        float(v)
        return True
    except ValueError:
        return False


def write_array(values, path=None, fmt="%.10g"):
    """Write ``values`` to ``path`` (``.npy``, else CSV) or, without a path, to stdout."""
    values = np.asarray(values)
    if path is None:
        np.savetxt(sys.stdout, values, fmt=fmt, delimiter=",")
    elif Path(path).suffix.lower() == ".npy":
        np.save(path, values)
    else:
        np.savetxt(path, values, fmt=fmt, delimiter=",")


def save_params(params, path):
    """Save a dict of parameters (arrays, strings, numbers) as ``.npz`` or ``.json``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        text = json.dumps({k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                           for k, v in params.items()}, indent=2)
        Path(path).write_text(text + "\n")
    elif suffix == ".npz":
        np.savez(path, **{k: np.asarray(v) for k, v in params.items()})
    else:
        raise CLIError(f"{path}: parameter files must end in .npz or .json")


def load_params(path):
    """Load parameters saved by :func:`save_params`; values as NumPy arrays or scalars."""
    path = Path(path)
    if path.suffix.lower() not in (".npz", ".json"):
        raise CLIError(f"{path}: parameter files must end in .npz or .json")
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise ValueError("expected a JSON object")
            return {k: np.asarray(v) if isinstance(v, list) else v for k, v in raw.items()}
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] if f[k].ndim else f[k].item() for k in f.files}
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        raise CLIError(f"{path}: not a readable parameter file ({e})") from None


def _param_arrays(params, *names):
    """The named float64 arrays of a loaded parameter file (one-line errors if missing or
    malformed)."""
    try:
        return [np.asarray(params[name], dtype=np.float64) for name in names]
    except KeyError as e:
        raise CLIError(f"parameter file has no {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise CLIError(f"parameter file has a malformed value ({e})") from None


def _param_options(params, **defaults):
    """Scalar options of a parameter file, converted to the type of their defaults."""
    try:
        return [type(d)(params.get(k, d)) for k, d in defaults.items()]
    except (TypeError, ValueError) as e:
        raise CLIError(f"parameter file has a malformed value ({e})") from None


# ---------------------------------------------------------------------------- families
class Family:
    """
    A model family on the command line. Subclasses set ``name`` and ``help`` and
    implement the methods below; register an instance in :data:`FAMILIES`.
    """

    name = ""
    help = ""

    def add_fit_arguments(self, parser):
        """Family-specific options of ``pyroem fit NAME``."""

    def add_data_arguments(self, parser):
        """Options on how to read ``DATA``, for both ``pyroem fit NAME`` and
        ``pyroem score NAME``."""

    def read_data(self, path, args):
        """The model's data arguments (a tuple) from a data file."""
        raise NotImplementedError

    def build(self, data, args):
        """A fresh model for ``data`` from the fit options."""
        raise NotImplementedError

    def summary(self, model):
        """Lines describing the fitted parameters."""
        return []

    def params(self, model):
        """The fitted parameters as a dict (saved by :func:`save_params`)."""
        raise NotImplementedError

    def from_params(self, params):
        """A model from a dict loaded by :func:`load_params`."""
        raise NotImplementedError

    def score(self, model, data):
        """Per-item log-likelihood."""
        return model.log_prob(*data).numpy()

    def sample(self, model, num_samples):
        """An array of ``num_samples`` draws."""
        raise NotImplementedError

    def plot(self, model, data, path):
        """Write a figure of the fit to ``path``."""
        raise CLIError(f"--plot is not available for {self.name}")

    def check_plot(self, data):
        """Fail early (before fitting) if the data cannot be plotted."""


def _add_gaussian_options(parser, of=""):
    """The options of Gaussian components (mixtures and HMM emissions)."""
    parser.add_argument("--covariance-type", default="full", choices=COVARIANCE_TYPES,
                        help=f"covariance structure{of} (default full)")
    parser.add_argument("--reg-covar", type=float, default=1e-6,
                        help="added to covariance diagonals (default 1e-6)")
    parser.add_argument("--init", default="kmeans++", choices=("kmeans++", "random"),
                        help=f"initialisation{of} (default kmeans++)")


def _mean_lines(model):
    return [f"mean[{k}]: {np.array2string(mean, precision=4)}"
            for k, mean in enumerate(model.means.detach().numpy())]


def _gaussian_params(model):
    """The Gaussian components' entries of a parameter file (GMM and Gaussian HMM)."""
    return {"covariance_type": model.covariance_type, "reg_covar": model.reg_covar,
            "means": model.means.detach().numpy(), "covariances": model.covariances.numpy()}


class GMMFamily(Family):
    name = "gmm"
    help = "Gaussian mixture: DATA is (N, D), one point per row"

    def add_fit_arguments(self, parser):
        parser.add_argument("--components", "-k", type=int, default=2, metavar="K",
                            help="number of mixture components (default 2)")
        _add_gaussian_options(parser)

    def read_data(self, path, args):
        x = read_array(path)
        return (x.reshape(-1, 1) if x.ndim == 1 else x,)

    def build(self, data, args):
        return GaussianMixture(args.components, data[0].shape[1], args.covariance_type,
                               args.reg_covar)

    def summary(self, model):
        return [f"weights: {np.array2string(model.weights.detach().numpy(), precision=4)}",
                *_mean_lines(model)]

    def params(self, model):
        return {"family": self.name, "weights": model.weights.detach().numpy(),
                **_gaussian_params(model)}

    def from_params(self, params):
        weights, means, covariances = _param_arrays(params, "weights", "means", "covariances")
        covariance_type, reg_covar = _param_options(params, covariance_type="full",
                                                    reg_covar=1e-6)
        if means.ndim != 2 or weights.shape != (means.shape[0],):
            raise CLIError(f"parameter file: weights {weights.shape} and means {means.shape} "
                           "do not fit (K,) and (K, D)")
        if not (np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-6):
            raise CLIError("parameter file: weights must be non-negative and sum to 1")
        model = GaussianMixture(means.shape[0], means.shape[1], covariance_type, reg_covar)
        model = model.to(torch.float64)
        model.weights = torch.as_tensor(weights)
        model.means = torch.as_tensor(means)
        model.covariances = torch.as_tensor(covariances)
        return model

    def sample(self, model, num_samples):
        x, _ = model.sample(num_samples)
        return x.numpy()

    def check_plot(self, data):
        if data[0].shape[1] != 2:
            raise CLIError(f"--plot needs 2-D data, got {data[0].shape[1]} columns")

    def plot(self, model, data, path):
        from matplotlib.figure import Figure
        from matplotlib.patches import Ellipse

        x = data[0]
        labels = model.predict(torch.as_tensor(x)).numpy()
        cov = _full_covariances(model)
        fig = Figure(figsize=(6, 4.5))
        ax = fig.add_subplot()
        ax.scatter(x[:, 0], x[:, 1], c=labels, cmap="tab10", vmin=0, vmax=9, s=10, alpha=0.7)
        for k, (mean, c) in enumerate(zip(model.means.detach().numpy(), cov)):
            values, vectors = np.linalg.eigh(c)
            angle = math.degrees(math.atan2(vectors[1, -1], vectors[0, -1]))
            for n_std in (1, 2):  # ellipses at 1 and 2 standard deviations
                width, height = 2 * n_std * np.sqrt(values[::-1])
                ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False,
                                     color=f"C{k % 10}", lw=1.5 if n_std == 1 else 0.8))
            ax.plot(*mean, "k+", ms=10)
        ax.set_title(f"Gaussian mixture, K={model.num_components} ({model.covariance_type})")
        ax.set_xlabel("x[0]")
        ax.set_ylabel("x[1]")
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=120)
        except ValueError as e:  # e.g. an unknown image format
            raise CLIError(f"{path}: cannot write the plot ({e})") from None


def _full_covariances(model):
    """Covariances as ``(K, D, D)`` whatever the ``covariance_type``."""
    cov = model.covariances.numpy()
    K, D = model.num_components, model.dim
    if model.covariance_type == "tied":
        return np.broadcast_to(cov, (K, D, D))
    if model.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    if model.covariance_type == "spherical":
        return cov[:, None, None] * np.eye(D)
    return cov


class PLDAFamily(Family):
    name = "plda"
    help = ("two-covariance PLDA: DATA is (N, 1 + D), the speaker label in the first column "
            "and one embedding per row")

    def add_fit_arguments(self, parser):
        parser.add_argument("--reg-covar", type=float, default=1e-6,
                            help="added to covariance diagonals (default 1e-6)")

    def read_data(self, path, args):
        table = read_array(path)
        if table.ndim != 2 or table.shape[1] < 2:
            raise CLIError(f"{path}: PLDA data needs a label column and at least one "
                           f"embedding column, got shape {table.shape}")
        return table[:, 1:], table[:, 0]

    def build(self, data, args):
        return PLDA(data[0].shape[1], reg_covar=args.reg_covar)

    def summary(self, model):
        between = np.linalg.eigvalsh(model.between_cov.numpy())[::-1]
        within = np.linalg.eigvalsh(model.within_cov.numpy())[::-1]
        return [f"mean: {np.array2string(model.mean.detach().numpy(), precision=4)}",
                f"between_cov eigenvalues: {np.array2string(between, precision=4)}",
                f"within_cov eigenvalues: {np.array2string(within, precision=4)}"]

    def params(self, model):
        return {"family": self.name, "reg_covar": model.reg_covar,
                "mean": model.mean.detach().numpy(),
                "between_cov": model.between_cov.numpy(),
                "within_cov": model.within_cov.numpy()}

    def from_params(self, params):
        mean, between, within = _param_arrays(params, "mean", "between_cov", "within_cov")
        (reg_covar,) = _param_options(params, reg_covar=1e-6)
        if mean.ndim != 1:
            raise CLIError(f"parameter file: mean must be (D,), got {mean.shape}")
        model = PLDA(mean.shape[0], reg_covar=reg_covar).to(torch.float64)
        model.mean = torch.as_tensor(mean)
        model.between_cov = torch.as_tensor(between)
        model.within_cov = torch.as_tensor(within)
        return model

    def score(self, model, data):
        # per-speaker log p(x_s1, ..., x_sn) in sorted-label order
        return model.log_prob(*data).numpy()

    def sample(self, model, num_samples):
        # num_samples speakers with 5 embeddings each; the label column first
        x, labels, _ = model.sample(num_samples, 5)
        return np.column_stack([labels.numpy(), x.numpy()])


class HMMFamily(Family):
    name = "hmm"
    help = ("Gaussian hidden Markov model: DATA is (T, D), one frame per row in time order; "
            "one sequence, or several with --lengths FILE or --ids")

    def add_fit_arguments(self, parser):
        parser.add_argument("--states", "-k", type=int, default=2, metavar="K",
                            help="number of hidden states (default 2)")
        _add_gaussian_options(parser, " of the emissions")

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
        return lines + _mean_lines(model)

    def params(self, model):
        return {"family": self.name, "start_probs": model.start_probs.detach().numpy(),
                "trans_probs": model.trans_probs.detach().numpy(), **_gaussian_params(model)}

    def from_params(self, params):
        start, trans, means, covariances = _param_arrays(
            params, "start_probs", "trans_probs", "means", "covariances")
        covariance_type, reg_covar = _param_options(params, covariance_type="full",
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

    def sample(self, model, num_samples):
        """One sequence of ``num_samples`` frames (seeded by ``--seed`` via torch)."""
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
        for d, ax in enumerate(axes):
            ax.plot(t, x[:, d], color="0.75", lw=0.8, zorder=1)
            ax.scatter(t, x[:, d], c=z, cmap="tab10", vmin=0, vmax=9, s=10, zorder=2)
            for end in np.cumsum(lengths)[:-1]:  # sequence boundaries
                ax.axvline(end - 0.5, color="k", lw=0.6, ls=":")
            ax.set_ylabel(f"x[{d}]")
        axes[0].set_title(f"Gaussian HMM, K={model.num_states}: frames coloured by Viterbi state")
        axes[-1].set_xlabel("frame")
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=120)
        except ValueError as e:  # e.g. an unknown image format
            raise CLIError(f"{path}: cannot write the plot ({e})") from None


#: the model families of the command line, by name
FAMILIES = {f.name: f for f in (GMMFamily(), PLDAFamily(), HMMFamily())}


# ---------------------------------------------------------------------------- commands
def _family(args):
    return FAMILIES[args.family]


def _load_model(family, path):
    params = load_params(path)
    stored = params.get("family", family.name)
    if stored != family.name:
        raise CLIError(f"{path}: holds {stored} parameters, not {family.name}")
    return family.from_params(params)


def _fit(args):
    family = _family(args)
    data = family.read_data(args.data, args)
    if args.plot:
        family.check_plot(data)
    model = family.build(data, args)
    options = dict(method=args.method, max_iter=args.max_iter, tol=args.tol,
                   num_restarts=args.restarts, seed=args.seed, progress=not args.quiet)
    if getattr(args, "init", None):
        options["init"] = args.init
    if args.method == "svi":
        options["lr"] = args.lr
    tensors = tuple(torch.as_tensor(d) for d in data)
    hist = model.fit(*tensors, method=options.pop("method"), **options)
    n = model._num_items(model._data(*tensors))
    status = "converged" if hist.converged else "not converged"
    objective = "log p(X, Z_hat)" if args.method == "viterbi" else "log p(X)"
    print(f"{family.name} fitted by {args.method}: {hist.num_iters} iterations ({status}), "
          f"{objective}/N = {hist.final_log_likelihood / n:.6f}")
    print(f"log p(X)/N = {float(model.log_prob(*tensors).sum()) / n:.6f}, "
          f"BIC = {model.bic(*tensors):.4f}")
    for line in family.summary(model):
        print(line)
    if args.output:
        save_params(family.params(model), args.output)
        print(f"parameters written to {args.output}")
    if args.plot:
        family.plot(model, data, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def _score(args):
    family = _family(args)
    model = _load_model(family, args.params)
    data = family.read_data(args.data, args)
    scores = family.score(model, tuple(torch.as_tensor(d) for d in data))
    write_array(scores, args.output)
    return 0


def _sample(args):
    family = _family(args)
    model = _load_model(family, args.params)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    write_array(family.sample(model, args.num_samples), args.output)
    return 0


def _demo(args):
    from pyroem.demo import run  # the demo's imports (plots, data sets) only when asked

    return run(args.out, seed=args.seed, progress=not args.quiet)


# ---------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line (with where to find help) and exit status 2."""

    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _nonnegative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def build_parser():
    parser = _Parser(prog="pyroem", description="Exact EM for Pyro models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="fit the built-in models on bundled real data")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--out", default="pyroem-demo", metavar="DIR",
                      help="folder for the figures (default pyroem-demo)")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser("fit", help="fit a model to a data file")
    fit_sub = fit.add_subparsers(dest="family", required=True, metavar="FAMILY",
                                 parser_class=_Parser)
    score = sub.add_parser("score", help="per-item log-likelihood of a data file")
    score_sub = score.add_subparsers(dest="family", required=True, metavar="FAMILY",
                                     parser_class=_Parser)
    sample = sub.add_parser("sample", help="draw samples from fitted parameters")
    sample_sub = sample.add_subparsers(dest="family", required=True, metavar="FAMILY",
                                       parser_class=_Parser)
    for family in FAMILIES.values():
        p = fit_sub.add_parser(family.name, help=family.help)
        p.add_argument("data", metavar="DATA", help="data file (.npy or .csv)")
        family.add_data_arguments(p)
        family.add_fit_arguments(p)
        p.add_argument("--method", default="em", choices=("em", "viterbi", "svi"),
                       help="exact EM, Viterbi (hard) EM or SVI (default em)")
        p.add_argument("--max-iter", type=_positive_int, default=200,
                       help="iterations at most (default 200)")
        p.add_argument("--tol", type=_nonnegative_float, default=1e-6,
                       help="stop when the objective per item changes less (default 1e-6)")
        p.add_argument("--restarts", type=_positive_int, default=1,
                       help="initialisations, the best is kept (default 1)")
        p.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate for svi")
        p.add_argument("--seed", type=int, default=0, help="seed of the initialisation")
        p.add_argument("--output", "-o", metavar="PARAMS",
                       help="write the fitted parameters (.npz or .json)")
        p.add_argument("--plot", metavar="PNG", help="write a figure of the fit")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        p.set_defaults(func=_fit)

        p = score_sub.add_parser(family.name, help=family.help)
        p.add_argument("params", metavar="PARAMS", help="parameters written by 'pyroem fit'")
        p.add_argument("data", metavar="DATA", help="data file (.npy or .csv)")
        family.add_data_arguments(p)
        p.add_argument("--output", "-o", metavar="FILE",
                       help="write the scores here (.npy or CSV) instead of stdout")
        p.set_defaults(func=_score)

        p = sample_sub.add_parser(family.name, help=family.help)
        p.add_argument("params", metavar="PARAMS", help="parameters written by 'pyroem fit'")
        p.add_argument("num_samples", metavar="N", type=_positive_int, help="how many")
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--output", "-o", metavar="FILE",
                       help="write the samples here (.npy or CSV) instead of stdout")
        p.set_defaults(func=_sample)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status (0 on success, 2 on an error)."""
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "output", None) and args.func is _fit:
            if Path(args.output).suffix.lower() not in (".npz", ".json"):
                raise CLIError(f"{args.output}: parameter files must end in .npz or .json")
        return args.func(args)
    except SystemExit as e:  # --help
        return e.code
    except KeyboardInterrupt:
        print("pyroem: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, never a traceback (unless PYROEM_DEBUG)
        if os.environ.get("PYROEM_DEBUG"):
            raise
        known = isinstance(e, (ValueError, OSError, FloatingPointError))
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not known:
            message = f"{type(e).__name__}: {message}"
        print(f"pyroem: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

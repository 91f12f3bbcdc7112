"""
The sub-commands of ``pyroem`` and its entry point: the registry of model families
(:data:`FAMILIES`), the argument parser built from it, the commands ``fit``, ``score``,
``sample`` and ``demo``, and :func:`main`, which turns every error into one line on stderr
and exit status 2.
"""

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

import pyro
import torch

import pyroem
from pyroem.cli.family import Family
from pyroem.cli.gmm import GMMFamily
from pyroem.cli.hmm import HMMFamily
from pyroem.cli.io import CLIError, load_params, save_params, write_array
from pyroem.cli.plda import PLDAFamily
from pyroem.models.checkpoint import is_checkpoint
from pyroem.models.checkpoint import load as load_checkpoint
from pyroem.models.checkpoint import read as read_checkpoint
from pyroem.models.checkpoint import save as save_checkpoint

#: the model families of the command line, by name
FAMILIES = {f.name: f for f in (GMMFamily(), PLDAFamily(), HMMFamily())}


# ---------------------------------------------------------------------------- commands
def _family(args):
    return FAMILIES[args.family]


def _load_model(family, path):
    if str(path).lower().endswith(".npz") and Path(path).is_file() and is_checkpoint(path):
        return _load_checkpoint(family, path)
    params = load_params(path)  # JSON, or a plain archive of the arrays
    stored = params.get("family", family.name)
    if stored != family.name:
        raise CLIError(f"{path}: holds {stored} parameters, not {family.name}")
    try:
        return family.from_params(params)
    except (ValueError, TypeError, RuntimeError) as e:  # the model's setters' checks
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(f"{path}: {message}") from None


def _load_checkpoint(family, path):
    """The model of a checkpoint (written by ``fit -o x.npz`` or ``model.save``): its
    exact parameters."""
    try:
        stored = read_checkpoint(path).get("class")
        cls = family.reads_checkpoint_of(stored)
        if cls is None:
            owner = next((f.name for f in FAMILIES.values() if f.reads_checkpoint_of(stored)),
                         stored)
            raise CLIError(f"{path}: holds {owner} parameters, not {family.name}")
        return load_checkpoint(path, expected=cls)
    except (ValueError, FileNotFoundError) as e:
        if isinstance(e, CLIError):
            raise
        raise CLIError(f"{path}: {str(e).replace(repr(str(path)) + ' ', '')}") from None


def _check_output(path):
    """Fail before any work if ``path`` cannot be written: its folder must exist."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise CLIError(f"{path}: no such directory {str(Path(path).parent)!r}")


def _check_plot_path(path):
    """Fail before fitting if ``path`` is not an image file Matplotlib can write."""
    from matplotlib.backend_bases import FigureCanvasBase

    _check_output(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise CLIError(f"{path}: cannot write the plot (the file name must end in one of "
                       f"{', '.join('.' + f for f in sorted(formats))})")


def _tensors(data):
    """The model's arguments: numeric arrays as tensors, others (text labels) as they are."""
    return tuple(torch.as_tensor(d) if d.dtype.kind in "biuf" else d for d in data)


def _fit(args):
    family = _family(args)
    _check_output(args.output)
    if getattr(args, "plot", None):
        _check_plot_path(args.plot)
    data = family.read_data(args.data, args)
    if getattr(args, "plot", None):
        family.check_plot(data)
    model = family.build(data, args)
    options = {"method": args.method, "max_iter": args.max_iter, "tol": args.tol,
               "num_restarts": args.restarts, "seed": args.seed, "progress": not args.quiet}
    if getattr(args, "init", None):
        options["init"] = args.init
    if args.method == "svi":
        options["lr"] = args.lr
    tensors = _tensors(data)
    hist = model.fit(*tensors, method=options.pop("method"), **options)
    n = model._num_items(model._data(*tensors))
    status = "converged" if hist.converged else "not converged"
    # the final log-likelihood, once: that of the fitted parameters (Viterbi training's own
    # objective, log p(X, Z_hat), is another number, so it is named apart)
    own = (f"; training objective log p(X, Z_hat)/N = {hist.final_log_likelihood / n:.6f}"
           if args.method == "viterbi" else "")
    print(f"{family.name} fitted by {args.method}: {hist.num_iters} iterations ({status}){own}")
    print(f"log p(X)/N = {float(model.log_prob(*tensors).sum()) / n:.6f}, "
          f"BIC = {model.bic(*tensors):.4f}")
    for line in family.summary(model):
        print(line)
    if args.output:
        if str(args.output).lower().endswith(".npz"):  # a checkpoint, readable by numpy too
            save_checkpoint(model, args.output, readable=family.params(model))
        else:
            save_params(family.params(model), args.output)
        print(f"parameters written to {args.output}")
    if getattr(args, "plot", None):
        family.plot(model, data, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def _score(args):
    family = _family(args)
    _check_output(args.output)
    model = _load_model(family, args.params)
    if getattr(args, "trials", None):  # a verification trial list (PLDA)
        return family.score_trials(model, args)
    data = family.read_data(args.data, args)
    scores = family.score(model, _tensors(data))
    write_array(scores, args.output)
    return 0


def _sample(args):
    family = _family(args)
    _check_output(args.output)
    model = _load_model(family, args.params)
    with torch.random.fork_rng(devices=[]):  # the caller's generator left as it was
        if args.seed is not None:
            torch.manual_seed(args.seed)
        samples = family.sample(model, args.num_samples, seed=args.seed)
    write_array(samples, args.output)
    return 0


def _demo(args):
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise CLIError(f"{args.out}: --out must be a folder, and this is a file")
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


def _float_type(accept, words):
    """An argparse type: a number for which ``accept`` holds (``words`` says which)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {words}, got {text}")
        return value
    return parse


_nonnegative_float = _float_type(lambda v: v >= 0, "a number >= 0")
_positive_float = _float_type(lambda v: v > 0 and math.isfinite(v), "a finite number > 0")


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -2**63 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer in [-2**63, 2**63), got {value}")
    return value


def _add_demo_parser(sub):
    demo = sub.add_parser("demo", help="fit the built-in models on bundled real data")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--out", default="pyroem-demo", metavar="DIR",
                      help="folder for the figures (default pyroem-demo)")
    demo.set_defaults(func=_demo)


def _add_fit_parser(fit_sub, family):
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
    p.add_argument("--lr", type=_positive_float, default=0.05,
                   help="Adam's learning rate for svi")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the initialisation")
    p.add_argument("--output", "-o", metavar="PARAMS",
                   help="write the fitted parameters (.npz or .json)")
    if type(family).plot is not Family.plot:  # offered only where a family draws one
        p.add_argument("--plot", metavar="PNG", help="write a figure of the fit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_fit)


def _add_score_parser(score_sub, family):
    p = score_sub.add_parser(family.name, help=family.help)
    p.add_argument("params", metavar="PARAMS", help="parameters written by 'pyroem fit'")
    p.add_argument("data", metavar="DATA", help="data file (.npy or .csv)")
    family.add_data_arguments(p)
    family.add_score_arguments(p)
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the scores here (.npy or CSV) instead of stdout")
    p.set_defaults(func=_score)


def _add_sample_parser(sample_sub, family):
    p = sample_sub.add_parser(family.name, help=family.help)
    p.add_argument("params", metavar="PARAMS", help="parameters written by 'pyroem fit'")
    p.add_argument("num_samples", metavar="N", type=_positive_int, help="how many")
    p.add_argument("--seed", type=_seed, default=None)
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the samples here (.npy or CSV) instead of stdout")
    p.set_defaults(func=_sample)


def build_parser():
    """The parser of ``pyroem``: ``demo``, and ``fit``, ``score`` and ``sample`` with one
    sub-command per registered family."""
    parser = _Parser(prog="pyroem", description="Exact EM for Pyro models.")
    parser.add_argument("--version", action="version",
                        version=f"pyroem {pyroem.__version__} (torch {torch.__version__}, "
                                f"pyro-ppl {pyro.__version__})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_demo_parser(sub)
    family_subs = []
    for name, help in (("fit", "fit a model to a data file"),
                       ("score", "per-item log-likelihood of a data file"),
                       ("sample", "draw samples from fitted parameters")):
        command = sub.add_parser(name, help=help)
        family_subs.append(command.add_subparsers(dest="family", required=True,
                                                  metavar="FAMILY", parser_class=_Parser))
    fit_sub, score_sub, sample_sub = family_subs
    for family in FAMILIES.values():
        _add_fit_parser(fit_sub, family)
        _add_score_parser(score_sub, family)
        _add_sample_parser(sample_sub, family)
    return parser


def _stdout_closed():
    """The reader of stdout has gone (``pyroem ... | head -1``): point stdout at
    ``os.devnull`` so that nothing more (not even the final flush at exit) fails, as
    standard tools end quietly then."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass


def main(argv=None):
    """Run the command line; returns the exit status (0 on success, also when the reader
    of stdout stops early; 2 on an error)."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # a reader that has gone shows here, not at exit
        return code
    except BrokenPipeError:
        _stdout_closed()
        return 0


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """Show a warning (e.g. an unconverged fit) as one line, like the errors."""
    text = str(message).strip()
    text = text.splitlines()[0] if text else category.__name__
    print(f"pyroem: warning: {text}", file=file or sys.stderr)


def _run(argv):
    with warnings.catch_warnings():  # the filters stay the user's; only the display changes
        warnings.showwarning = _warning_line
        return _run_command(argv)


def _run_command(argv):
    try:
        args = build_parser().parse_args(argv)
        if (getattr(args, "output", None) and args.func is _fit
                and Path(args.output).suffix.lower() not in (".npz", ".json")):
            raise CLIError(f"{args.output}: parameter files must end in .npz or .json")
        return args.func(args)
    except SystemExit as e:  # --help
        return e.code
    except BrokenPipeError:
        raise
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

"""
The ``pyroem`` command line::

    pyroem demo
    pyroem fit gmm DATA [--components K] [--covariance-type full] [--method em]
                        [--output PARAMS.npz|.json] [--plot FIG.png]
    pyroem score gmm PARAMS DATA [--output FILE]
    pyroem sample gmm PARAMS N [--seed S] [--output FILE]
    pyroem fit hmm DATA [--states K] [--lengths FILE | --ids] [...]   (also score, sample)
    pyroem fit plda DATA [--reg-covar R] [...]                         (also score, sample)
    pyroem score plda PARAMS DATA --trials TRIALS [--enroll F] [--cohort F [--top-k K]]

``DATA`` is a ``.npy`` array or a CSV file (comma-separated numbers, one item per row;
``#`` comment lines and a header, a first row none of whose fields is a number, are
skipped; any other field that is not a number is an error naming its row and column).
Model families are registered in
:data:`~pyroem.cli.commands.FAMILIES`: each knows its fit options, how to build and fit a
model, how to save and load its parameters and how to score and sample, so a family is
added in one place.

Errors (bad files, malformed data, bad options) are reported as one line on stderr with
exit status 2; set ``PYROEM_DEBUG=1`` to see the traceback instead. A closed stdout
(``pyroem ... | head -1``) ends the command quietly with exit status 0.

The package's modules:

- :mod:`pyroem.cli.io`: reading data files, writing results, saving and loading
  parameter files (shared by all families);
- :mod:`pyroem.cli.family`: the :class:`~pyroem.cli.family.Family` base class and the
  helpers that families of Gaussian components share;
- :mod:`pyroem.cli.gmm`, :mod:`pyroem.cli.hmm`, :mod:`pyroem.cli.plda`: one model family
  each; :mod:`pyroem.cli.trials`: verification trial lists for PLDA;
- :mod:`pyroem.cli.commands`: the registry of families, the argument parser, the
  sub-commands ``fit``, ``score``, ``sample`` and ``demo``, and
  :func:`~pyroem.cli.commands.main`.
"""

from pyroem.cli.commands import FAMILIES, build_parser, main
from pyroem.cli.family import Family
from pyroem.cli.gmm import GMMFamily
from pyroem.cli.hmm import HMMFamily
from pyroem.cli.io import CLIError, load_params, read_array, save_params, write_array
from pyroem.cli.plda import PLDAFamily

__all__ = ["FAMILIES", "CLIError", "Family", "GMMFamily", "HMMFamily", "PLDAFamily",
           "build_parser", "load_params", "main", "read_array", "save_params", "write_array"]

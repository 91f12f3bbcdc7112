"""Hardening corpus (issue 17) for the command line and the scikit-learn wrappers.

Each bad input is one row of a table. For the command line, a refused call must exit with
status 2, print one line ``pyroem: error: ...`` naming the problem on stderr (no
traceback) and nothing on stdout, and leave every file as it was (the parameter files it
read, an existing ``--output`` file, no new file). For the wrappers, it must raise the
expected error type with a message naming the problem, and a fitted estimator's fitted
attributes (and its pyroem model's state) must be bitwise unchanged afterwards.

The command line runs in-process (``pyroem.cli.main(argv)``), except one subprocess for
the closed pipe (``pyroem ... | head -1``).
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.exceptions import NotFittedError

from pyroem.cli import main
from pyroem.infer.loop import ConvergenceWarning
from pyroem.models import PLDA
from pyroem.models import GaussianMixture as GMMModel
from pyroem.sklearn import GaussianHMM, GaussianMixture

ROOT = Path(__file__).resolve().parents[1]


# ============================================================================ command line
def _quiet_main(argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    """Good data and fitted parameter files of every family, built once."""
    d = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 2)), rng.normal(6, 1, (20, 2))])
    np.savetxt(d / "gmm.csv", x, delimiter=",", header="a,b", comments="")
    np.savetxt(d / "wide.csv", rng.normal(size=(10, 3)), delimiter=",")
    frames = np.where(np.arange(60) % 10 < 5, 0.0, 5.0) + rng.normal(0, 0.5, 60)
    np.savetxt(d / "hmm.csv", frames, header="value", comments="")
    (d / "lengths.csv").write_text("20\n40\n")
    speakers = rng.normal(0, 3, (8, 2))
    rows = [f"spk{s},{float(e[0])!r},{float(e[1])!r}" for s in range(8)
            for e in speakers[s] + rng.normal(0, 1, (4, 2))]
    (d / "plda.csv").write_text("speaker,e1,e2\n" + "\n".join(rows) + "\n")
    for family, data in (("gmm", "gmm.csv"), ("hmm", "hmm.csv"), ("plda", "plda.csv")):
        assert _quiet_main(["fit", family, d / data, "--max-iter", 5, "-q",
                            "-o", d / f"{family}.npz"]) == 0
    return d


def _gmm_params(**change):
    params = {"family": "gmm", "covariance_type": "full", "reg_covar": 1e-6,
              "weights": np.array([0.5, 0.5]), "means": np.array([[0.0, 0.0], [5.0, 5.0]]),
              "covariances": np.array([np.eye(2), np.eye(2)])}
    params.update(change)
    return {k: v for k, v in params.items() if v is not None}


def _hmm_params(**change):
    params = {"family": "hmm", "covariance_type": "full", "reg_covar": 1e-6,
              "start_probs": np.array([0.5, 0.5]),
              "trans_probs": np.array([[0.9, 0.1], [0.1, 0.9]]),
              "means": np.array([[0.0], [5.0]]), "covariances": np.ones((2, 1, 1))}
    params.update(change)
    return {k: v for k, v in params.items() if v is not None}


def _plda_params(**change):
    params = {"family": "plda", "reg_covar": 1e-6, "mean": np.zeros(2),
              "between_cov": 4 * np.eye(2), "within_cov": np.eye(2)}
    params.update(change)
    return {k: v for k, v in params.items() if v is not None}


NAN_MEANS = np.array([[0.0, np.nan], [5.0, 5.0]])

# (id, argv, files written for the case, words the error line must hold). Files named in
# argv and present in every case: gmm.csv (40 x 2, a header), wide.csv (10 x 3), hmm.csv
# (60 frames), lengths.csv (20, 40), plda.csv (8 named speakers x 4 embeddings, 2-D, a
# header), gmm.npz / hmm.npz / plda.npz (fitted), out.npz / out.csv (existing outputs).
# ``fit`` cases get ``-q -o out.npz``, ``score`` and ``sample`` cases ``-o out.csv``
# (unless they give their own ``-o``): a refused call must not touch them.
CLI_CASES = [
    # ------------------------------------------------------------------ fit gmm
    ("fit-gmm-nan-csv", ["fit", "gmm", "bad.csv"], {"bad.csv": "1,2\nnan,4\n3,4\n"},
     ["NaN or inf", "row 2, column 1"]),
    ("fit-gmm-inf-npy", ["fit", "gmm", "bad.npy"],
     {"bad.npy": np.array([[1.0, 2.0], [3.0, np.inf], [0.0, 1.0]])}, ["NaN or inf", "row 2"]),
    ("fit-gmm-empty-file", ["fit", "gmm", "bad.csv"], {"bad.csv": ""}, ["no data rows"]),
    ("fit-gmm-header-only", ["fit", "gmm", "bad.csv"], {"bad.csv": "a,b\n"}, ["no data rows"]),
    ("fit-gmm-comments-only", ["fit", "gmm", "bad.csv"], {"bad.csv": "# x\n\n# y\n"},
     ["no data rows"]),
    ("fit-gmm-malformed-first-row", ["fit", "gmm", "bad.csv"],
     {"bad.csv": "3.6,79x\n1,2\n3,4\n5,6\n"}, ["row 1, column 2: '79x' is not a number"]),
    ("fit-gmm-malformed-after-header", ["fit", "gmm", "bad.csv"],
     {"bad.csv": "a,b\n1,2\n3,4x\n"}, ["line 3", "row 2, column 2: '4x' is not a number"]),
    ("fit-gmm-text-row", ["fit", "gmm", "bad.csv"], {"bad.csv": "1,2\nx,y\n3,4\n"},
     ["row 2, column 1: 'x' is not a number"]),
    ("fit-gmm-empty-field", ["fit", "gmm", "bad.csv"], {"bad.csv": "1,2\n3,\n5,6\n"},
     ["row 2, column 2: '' is not a number"]),
    ("fit-gmm-ragged", ["fit", "gmm", "bad.csv"], {"bad.csv": "1,2\n3,4\n5\n"},
     ["line 3", "expected 2 values, got 1"]),
    ("fit-gmm-3d-npy", ["fit", "gmm", "bad.npy"], {"bad.npy": np.zeros((4, 3, 2))},
     ["1-D or 2-D", "(4, 3, 2)"]),
    ("fit-gmm-string-npy", ["fit", "gmm", "bad.npy"], {"bad.npy": np.array([["a", "b"]])},
     ["numeric"]),
    ("fit-gmm-empty-npy", ["fit", "gmm", "bad.npy"], {"bad.npy": np.zeros((0, 2))},
     ["no data rows"]),
    ("fit-gmm-junk-npy", ["fit", "gmm", "bad.npy"], {"bad.npy": b"not numpy"},
     ["not a readable .npy"]),
    ("fit-gmm-binary-csv", ["fit", "gmm", "bad.csv"], {"bad.csv": bytes(range(256)) * 4},
     ["not a text (CSV) file"]),
    ("fit-gmm-k-gt-n", ["fit", "gmm", "bad.csv", "-k", 5], {"bad.csv": "1,2\n3,4\n5,6\n"},
     ["at least num_components=5 points"]),
    ("fit-gmm-missing-file", ["fit", "gmm", "missing.csv"], {}, ["missing.csv: no such file"]),
    ("fit-gmm-directory", ["fit", "gmm", "adir"], {"adir/": None}, ["adir: no such file"]),
    ("fit-gmm-unknown-option", ["fit", "gmm", "gmm.csv", "--frobnicate"], {},
     ["unrecognized arguments: --frobnicate"]),
    ("fit-gmm-k-zero", ["fit", "gmm", "gmm.csv", "-k", 0], {},
     ["num_components must be an integer >= 1"]),
    ("fit-gmm-k-negative", ["fit", "gmm", "gmm.csv", "-k", -2], {}, ["num_components", "-2"]),
    ("fit-gmm-k-text", ["fit", "gmm", "gmm.csv", "-k", "two"], {},
     ["--components", "invalid int value: 'two'"]),
    ("fit-gmm-tol-negative", ["fit", "gmm", "gmm.csv", "--tol", -1], {}, ["--tol", ">= 0"]),
    ("fit-gmm-tol-nan", ["fit", "gmm", "gmm.csv", "--tol", "nan"], {}, ["--tol", ">= 0"]),
    ("fit-gmm-tol-text", ["fit", "gmm", "gmm.csv", "--tol", "x"], {},
     ["--tol", "expected a number"]),
    ("fit-gmm-max-iter-zero", ["fit", "gmm", "gmm.csv", "--max-iter", 0], {},
     ["--max-iter", ">= 1"]),
    ("fit-gmm-restarts-zero", ["fit", "gmm", "gmm.csv", "--restarts", 0], {},
     ["--restarts", ">= 1"]),
    ("fit-gmm-reg-covar-negative", ["fit", "gmm", "gmm.csv", "--reg-covar", -1], {},
     ["reg_covar must be >= 0"]),
    ("fit-gmm-reg-covar-nan", ["fit", "gmm", "gmm.csv", "--reg-covar", "nan"], {},
     ["reg_covar must be >= 0"]),
    ("fit-gmm-method", ["fit", "gmm", "gmm.csv", "--method", "gibbs"], {},
     ["--method", "invalid choice: 'gibbs'"]),
    ("fit-gmm-covariance-type", ["fit", "gmm", "gmm.csv", "--covariance-type", "banana"], {},
     ["--covariance-type", "invalid choice: 'banana'"]),
    ("fit-gmm-init", ["fit", "gmm", "gmm.csv", "--init", "nope"], {},
     ["--init", "invalid choice: 'nope'"]),
    ("fit-gmm-lr-negative", ["fit", "gmm", "gmm.csv", "--method", "svi", "--lr", -1], {},
     ["--lr", "> 0"]),
    ("fit-gmm-lr-zero", ["fit", "gmm", "gmm.csv", "--method", "svi", "--lr", 0], {},
     ["--lr", "> 0"]),
    ("fit-gmm-seed-text", ["fit", "gmm", "gmm.csv", "--seed", "x"], {},
     ["--seed", "expected an integer"]),
    ("fit-gmm-seed-huge", ["fit", "gmm", "gmm.csv", "--seed", 2**70], {}, ["--seed", "2**63"]),
    ("fit-gmm-output-suffix", ["fit", "gmm", "gmm.csv", "-o", "params.txt"], {},
     ["params.txt", "must end in .npz or .json"]),
    ("fit-gmm-output-no-dir", ["fit", "gmm", "gmm.csv", "-o", "nodir/p.npz"], {},
     ["nodir/p.npz", "no such directory"]),
    ("fit-gmm-plot-3d", ["fit", "gmm", "wide.csv", "--plot", "f.png"], {},
     ["--plot needs 2-D data, got 3 columns"]),
    ("fit-gmm-plot-format", ["fit", "gmm", "gmm.csv", "--plot", "f.xyz"], {},
     ["f.xyz", "cannot write the plot", ".png"]),
    ("fit-gmm-plot-no-dir", ["fit", "gmm", "gmm.csv", "--plot", "nodir/f.png"], {},
     ["nodir/f.png", "no such directory"]),
    ("fit-gmm-missing-data-arg", ["fit", "gmm"], {}, ["required: DATA"]),
    # ------------------------------------------------------------------ score gmm
    ("score-gmm-params-missing", ["score", "gmm", "none.npz", "gmm.csv"], {},
     ["none.npz: no such file"]),
    ("score-gmm-params-suffix", ["score", "gmm", "gmm.csv", "gmm.csv"], {},
     ["must end in .npz or .json"]),
    ("score-gmm-params-broken-json", ["score", "gmm", "p.json", "gmm.csv"],
     {"p.json": "{not json"}, ["not a readable parameter file"]),
    ("score-gmm-params-json-list", ["score", "gmm", "p.json", "gmm.csv"],
     {"p.json": "[1, 2]"}, ["not a readable parameter file", "JSON object"]),
    ("score-gmm-params-junk-npz", ["score", "gmm", "p.npz", "gmm.csv"],
     {"p.npz": b"PK junk"}, ["not a readable parameter file"]),
    ("score-gmm-params-other-family", ["score", "gmm", "hmm.npz", "gmm.csv"], {},
     ["hmm.npz: holds hmm parameters, not gmm"]),
    ("score-gmm-params-nan", ["score", "gmm", "p.npz", "gmm.csv"],
     {"p.npz": _gmm_params(means=NAN_MEANS)}, ["p.npz", "'means' holds NaN or inf"]),
    ("score-gmm-params-weights", ["score", "gmm", "p.npz", "gmm.csv"],
     {"p.npz": _gmm_params(weights=np.array([0.9, 0.9]))}, ["weights", "sum to 1"]),
    ("score-gmm-params-negative-weight", ["score", "gmm", "p.npz", "gmm.csv"],
     {"p.npz": _gmm_params(weights=np.array([1.5, -0.5]))}, ["weights", "non-negative"]),
    ("score-gmm-params-not-pd", ["score", "gmm", "p.npz", "gmm.csv"],
     {"p.npz": _gmm_params(covariances=np.array([-np.eye(2), np.eye(2)]))},
     ["p.npz", "covariances", "positive definite"]),
    ("score-gmm-params-shapes", ["score", "gmm", "p.npz", "gmm.csv"],
     {"p.npz": _gmm_params(weights=np.array([0.2, 0.3, 0.5]))}, ["weights", "do not fit"]),
    ("score-gmm-params-missing-key", ["score", "gmm", "p.npz", "gmm.csv"],
     {"p.npz": _gmm_params(covariances=None)}, ["no 'covariances'"]),
    ("score-gmm-params-text-value", ["score", "gmm", "p.json", "gmm.csv"],
     {"p.json": json.dumps({"family": "gmm", "weights": ["a", "b"], "means": [[0, 0], [1, 1]],
                            "covariances": [[1, 1], [1, 1]]})}, ["malformed value"]),
    ("score-gmm-data-width", ["score", "gmm", "gmm.npz", "wide.csv"], {}, ["(N, 2)", "(10, 3)"]),
    ("score-gmm-data-nan", ["score", "gmm", "gmm.npz", "bad.csv"], {"bad.csv": "1,2\n3,nan\n"},
     ["NaN or inf", "row 2, column 2"]),
    ("score-gmm-data-malformed-first-row", ["score", "gmm", "gmm.npz", "bad.csv"],
     {"bad.csv": "3.6,79x\n1,2\n"}, ["row 1, column 2: '79x' is not a number"]),
    ("score-gmm-data-empty", ["score", "gmm", "gmm.npz", "bad.csv"], {"bad.csv": "a,b\n"},
     ["no data rows"]),
    ("score-gmm-data-missing", ["score", "gmm", "gmm.npz", "none.csv"], {},
     ["none.csv: no such file"]),
    ("score-gmm-output-no-dir", ["score", "gmm", "gmm.npz", "gmm.csv", "-o", "nodir/s.csv"], {},
     ["no such directory"]),
    ("score-gmm-unknown-option", ["score", "gmm", "gmm.npz", "gmm.csv", "-k", 2], {},
     ["unrecognized arguments: -k"]),
    ("score-gmm-missing-args", ["score", "gmm"], {}, ["required: PARAMS, DATA"]),
    # ------------------------------------------------------------------ sample gmm
    ("sample-gmm-n-zero", ["sample", "gmm", "gmm.npz", 0], {}, ["N", ">= 1"]),
    ("sample-gmm-n-negative", ["sample", "gmm", "gmm.npz", "-3"], {}, []),
    ("sample-gmm-n-text", ["sample", "gmm", "gmm.npz", "many"], {},
     ["N", "expected an integer, got 'many'"]),
    ("sample-gmm-n-float", ["sample", "gmm", "gmm.npz", "2.5"], {},
     ["N", "expected an integer, got '2.5'"]),
    ("sample-gmm-params-missing", ["sample", "gmm", "none.npz", 3], {}, ["no such file"]),
    ("sample-gmm-params-other-family", ["sample", "gmm", "plda.npz", 3], {},
     ["holds plda parameters"]),
    ("sample-gmm-params-nan", ["sample", "gmm", "p.npz", 3],
     {"p.npz": _gmm_params(means=NAN_MEANS)}, ["'means' holds NaN or inf"]),
    ("sample-gmm-seed-text", ["sample", "gmm", "gmm.npz", 3, "--seed", "x"], {},
     ["--seed", "expected an integer"]),
    ("sample-gmm-output-no-dir", ["sample", "gmm", "gmm.npz", 3, "-o", "nodir/x.csv"], {},
     ["no such directory"]),
    ("sample-gmm-unknown-option", ["sample", "gmm", "gmm.npz", 3, "--quiet"], {},
     ["unrecognized arguments: --quiet"]),
    # ------------------------------------------------------------------ fit hmm
    ("fit-hmm-lengths-sum", ["fit", "hmm", "bad.csv", "--lengths", "len.csv"],
     {"bad.csv": "1\n2\n3\n", "len.csv": "1\n1\n"}, ["lengths sum to 2", "has 3 rows"]),
    ("fit-hmm-lengths-float", ["fit", "hmm", "bad.csv", "--lengths", "len.csv"],
     {"bad.csv": "1\n2\n3\n", "len.csv": "1.5\n1.5\n"}, ["integers >= 1"]),
    ("fit-hmm-lengths-zero", ["fit", "hmm", "bad.csv", "--lengths", "len.csv"],
     {"bad.csv": "1\n2\n3\n", "len.csv": "3\n0\n"}, ["integers >= 1"]),
    ("fit-hmm-lengths-negative", ["fit", "hmm", "bad.csv", "--lengths", "len.csv"],
     {"bad.csv": "1\n2\n3\n", "len.csv": "4\n-1\n"}, ["integers >= 1"]),
    ("fit-hmm-lengths-nan", ["fit", "hmm", "hmm.csv", "--lengths", "len.csv"],
     {"len.csv": "30\nnan\n"}, ["len.csv", "NaN or inf"]),
    ("fit-hmm-lengths-text", ["fit", "hmm", "hmm.csv", "--lengths", "len.csv"],
     {"len.csv": "30\nthirty\n"}, ["len.csv", "'thirty' is not a number"]),
    ("fit-hmm-lengths-empty", ["fit", "hmm", "hmm.csv", "--lengths", "len.csv"],
     {"len.csv": "# none\n"}, ["len.csv", "no data rows"]),
    ("fit-hmm-lengths-missing", ["fit", "hmm", "hmm.csv", "--lengths", "none.csv"], {},
     ["none.csv: no such file"]),
    ("fit-hmm-ids-one-column", ["fit", "hmm", "hmm.csv", "--ids"], {},
     ["--ids", "id column"]),
    ("fit-hmm-ids-and-lengths", ["fit", "hmm", "hmm.csv", "--ids", "--lengths",
                                 "lengths.csv"], {}, ["not allowed"]),
    ("fit-hmm-k-gt-t", ["fit", "hmm", "bad.csv", "-k", 3], {"bad.csv": "1\n2\n"},
     ["at least num_states=3 frames"]),
    ("fit-hmm-nan", ["fit", "hmm", "bad.csv"], {"bad.csv": "1\nnan\n3\n"},
     ["NaN or inf", "row 2"]),
    ("fit-hmm-inf-npy", ["fit", "hmm", "bad.npy"], {"bad.npy": np.array([1.0, -np.inf, 2.0])},
     ["NaN or inf", "row 2"]),
    ("fit-hmm-malformed-first-row", ["fit", "hmm", "bad.csv"], {"bad.csv": "3.6,1x\n1,2\n"},
     ["row 1, column 2: '1x' is not a number"]),
    ("fit-hmm-ragged", ["fit", "hmm", "bad.csv"], {"bad.csv": "1,2\n3\n"},
     ["line 2", "expected 2 values, got 1"]),
    ("fit-hmm-empty", ["fit", "hmm", "bad.csv"], {"bad.csv": "value\n"}, ["no data rows"]),
    ("fit-hmm-string-npy", ["fit", "hmm", "bad.npy"], {"bad.npy": np.array(["a", "b"])},
     ["numeric"]),
    ("fit-hmm-states-zero", ["fit", "hmm", "hmm.csv", "--states", 0], {}, ["num_states"]),
    ("fit-hmm-covariance-type", ["fit", "hmm", "hmm.csv", "--covariance-type", "x"], {},
     ["--covariance-type", "invalid choice"]),
    ("fit-hmm-reg-covar", ["fit", "hmm", "hmm.csv", "--reg-covar", -1], {}, ["reg_covar"]),
    ("fit-hmm-method", ["fit", "hmm", "hmm.csv", "--method", "gibbs"], {},
     ["--method", "invalid choice"]),
    ("fit-hmm-unknown-option", ["fit", "hmm", "hmm.csv", "--components", 2], {},
     ["unrecognized arguments: --components"]),
    ("fit-hmm-plot-no-dir", ["fit", "hmm", "hmm.csv", "--plot", "nodir/f.png"], {},
     ["no such directory"]),
    # ------------------------------------------------------------------ score hmm
    ("score-hmm-lengths-sum", ["score", "hmm", "hmm.npz", "hmm.csv", "--lengths", "len.csv"],
     {"len.csv": "10\n10\n"}, ["lengths sum to 20", "has 60 rows"]),
    ("score-hmm-data-width", ["score", "hmm", "hmm.npz", "gmm.csv"], {}, ["dim", "2"]),
    ("score-hmm-ids-one-column", ["score", "hmm", "hmm.npz", "hmm.csv", "--ids"], {},
     ["id column"]),
    ("score-hmm-data-nan", ["score", "hmm", "hmm.npz", "bad.csv"], {"bad.csv": "1\nnan\n"},
     ["NaN or inf"]),
    ("score-hmm-params-trans", ["score", "hmm", "p.npz", "hmm.csv"],
     {"p.npz": _hmm_params(trans_probs=np.array([[0.5, 0.6], [0.5, 0.5]]))},
     ["trans_probs", "sum to 1"]),
    ("score-hmm-params-start-shape", ["score", "hmm", "p.npz", "hmm.csv"],
     {"p.npz": _hmm_params(start_probs=np.array([1.0]))}, ["start_probs", "do not fit"]),
    ("score-hmm-params-nan", ["score", "hmm", "p.npz", "hmm.csv"],
     {"p.npz": _hmm_params(covariances=np.full((2, 1, 1), np.nan))},
     ["'covariances' holds NaN or inf"]),
    ("score-hmm-params-missing-key", ["score", "hmm", "p.npz", "hmm.csv"],
     {"p.npz": _hmm_params(trans_probs=None)}, ["no 'trans_probs'"]),
    ("score-hmm-params-other-family", ["score", "hmm", "gmm.npz", "hmm.csv"], {},
     ["holds gmm parameters"]),
    ("score-hmm-unknown-option", ["score", "hmm", "hmm.npz", "hmm.csv", "--states", 2], {},
     ["unrecognized arguments: --states"]),
    # ------------------------------------------------------------------ sample hmm
    ("sample-hmm-n-zero", ["sample", "hmm", "hmm.npz", 0], {}, [">= 1"]),
    ("sample-hmm-params-not-pd", ["sample", "hmm", "p.npz", 3],
     {"p.npz": _hmm_params(covariances=-np.ones((2, 1, 1)))}, ["covariances"]),
    ("sample-hmm-params-start", ["sample", "hmm", "p.npz", 3],
     {"p.npz": _hmm_params(start_probs=np.array([0.7, 0.7]))}, ["start_probs"]),
    ("sample-hmm-params-other-family", ["sample", "hmm", "gmm.npz", 3], {},
     ["holds gmm parameters"]),
    # ------------------------------------------------------------------ fit plda
    ("fit-plda-one-column", ["fit", "plda", "bad.csv"], {"bad.csv": "1\n2\n3\n"},
     ["label column"]),
    ("fit-plda-no-label-column", ["fit", "plda", "gmm.csv"], {},
     ["label column", "row 1"]),
    ("fit-plda-one-embedding-each", ["fit", "plda", "bad.csv"],
     {"bad.csv": "1,0.5\n2,0.7\n3,0.1\n"}, ["label column", "3 speakers for 3 rows"]),
    ("fit-plda-one-speaker", ["fit", "plda", "bad.csv"],
     {"bad.csv": "alice,0.5\nalice,0.7\n"}, ["label column", "only one speaker"]),
    ("fit-plda-1d-npy", ["fit", "plda", "bad.npy"], {"bad.npy": np.arange(3.0)},
     ["label column", "(3,)"]),
    ("fit-plda-string-npy", ["fit", "plda", "bad.npy"],
     {"bad.npy": np.array([["a", "1"], ["b", "2"]])}, ["numeric"]),
    ("fit-plda-nan-embedding", ["fit", "plda", "bad.csv"],
     {"bad.csv": "a,1,2\na,nan,2\nb,1,1\n"}, ["NaN or inf", "row 2, column 2"]),
    ("fit-plda-nan-label", ["fit", "plda", "bad.csv"], {"bad.csv": "1,1,2\nnan,3,2\n"},
     ["NaN or inf", "row 2, column 1"]),
    ("fit-plda-empty-label", ["fit", "plda", "bad.csv"], {"bad.csv": "a,1\n,2\nb,3\n"},
     ["row 2, column 1: empty label"]),
    ("fit-plda-malformed-embedding", ["fit", "plda", "bad.csv"],
     {"bad.csv": "alice,1,2x\nalice,1,2\n"}, ["row 1, column 3: '2x' is not a number"]),
    ("fit-plda-ragged", ["fit", "plda", "bad.csv"], {"bad.csv": "a,1,2\na,1\n"},
     ["line 2", "expected 3 values, got 2"]),
    ("fit-plda-empty", ["fit", "plda", "bad.csv"], {"bad.csv": "speaker,e1\n"},
     ["no data rows"]),
    ("fit-plda-reg-covar", ["fit", "plda", "plda.csv", "--reg-covar", -1], {}, ["reg_covar"]),
    ("fit-plda-plot", ["fit", "plda", "plda.csv", "--plot", "f.png"], {},
     ["unrecognized arguments: --plot"]),
    ("fit-plda-unknown-option", ["fit", "plda", "plda.csv", "-k", 2], {},
     ["unrecognized arguments: -k"]),
    ("fit-plda-init", ["fit", "plda", "plda.csv", "--init", "random"], {},
     ["unrecognized arguments: --init"]),
    # ------------------------------------------------------------------ score plda
    ("score-plda-no-label-column", ["score", "plda", "plda.npz", "bad.csv"],
     {"bad.csv": "0.5,0.1\n0.2,0.3\n"}, ["label column", "row 1"]),
    ("score-plda-too-few-columns", ["score", "plda", "plda.npz", "bad.csv"],
     {"bad.csv": "a,0.5\nb,0.2\n"}, ["label column", "2 embedding columns", "got 2 columns"]),
    ("score-plda-too-many-columns", ["score", "plda", "plda.npz", "bad.csv"],
     {"bad.csv": "a,0.5,1,2\nb,0.2,1,2\n"}, ["label column", "got 4 columns"]),
    ("score-plda-data-nan", ["score", "plda", "plda.npz", "bad.csv"],
     {"bad.csv": "a,0.5,inf\n"}, ["NaN or inf", "row 1, column 3"]),
    ("score-plda-params-nan", ["score", "plda", "p.npz", "plda.csv"],
     {"p.npz": _plda_params(mean=np.array([np.nan, 0.0]))}, ["'mean' holds NaN or inf"]),
    ("score-plda-params-not-pd", ["score", "plda", "p.npz", "plda.csv"],
     {"p.npz": _plda_params(within_cov=-np.eye(2))}, ["within_cov", "positive definite"]),
    ("score-plda-params-mean-shape", ["score", "plda", "p.npz", "plda.csv"],
     {"p.npz": _plda_params(mean=np.zeros((2, 2)))}, ["mean must be (D,)"]),
    ("score-plda-params-missing-key", ["score", "plda", "p.npz", "plda.csv"],
     {"p.npz": _plda_params(between_cov=None)}, ["no 'between_cov'"]),
    ("score-plda-params-other-family", ["score", "plda", "gmm.npz", "plda.csv"], {},
     ["holds gmm parameters"]),
    # ------------------------------------------------------------------ sample plda
    ("sample-plda-n-zero", ["sample", "plda", "plda.npz", 0], {}, [">= 1"]),
    ("sample-plda-params-not-pd", ["sample", "plda", "p.npz", 2],
     {"p.npz": _plda_params(between_cov=np.array([[1.0, 2.0], [2.0, 1.0]]))},
     ["between_cov"]),
    ("sample-plda-params-other-family", ["sample", "plda", "hmm.npz", 2], {},
     ["holds hmm parameters"]),
    # ------------------------------------------------------------------ demo, top level
    ("demo-unknown-option", ["demo", "--fast"], {}, ["unrecognized arguments: --fast"]),
    ("demo-seed-text", ["demo", "--seed", "x"], {}, ["--seed", "expected an integer"]),
    ("demo-out-is-a-file", ["demo", "--out", "gmm.csv", "--quiet"], {},
     ["gmm.csv", "--out must be a folder"]),
    ("top-no-command", [], {}, ["required"]),
    ("top-unknown-command", ["train"], {}, ["invalid choice: 'train'"]),
    ("top-fit-no-family", ["fit"], {}, ["required: FAMILY"]),
    ("top-unknown-family", ["fit", "nope", "gmm.csv"], {}, ["invalid choice: 'nope'"]),
    ("top-unknown-global-option", ["--verbose", "fit", "gmm", "gmm.csv"], {},
     ["unrecognized arguments: --verbose"]),
]

GOOD_NAMES = ("gmm.csv", "wide.csv", "hmm.csv", "lengths.csv", "plda.csv", "gmm.npz",
              "hmm.npz", "plda.npz")


def _entry(argv):
    """The entry point a case belongs to (the row of the report's table)."""
    if argv and argv[0] in ("fit", "score", "sample") and len(argv) > 1 and argv[1] in (
            "gmm", "hmm", "plda"):
        return f"{argv[0]} {argv[1]}"
    return argv[0] if argv and argv[0] == "demo" else "pyroem (top level)"


def _write(path, content):
    if path.name.endswith("/") or content is None:
        path.mkdir()
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, files, words",
                         [pytest.param(a, f, w, id=i) for i, a, f, w in CLI_CASES])
def test_cli_refuses_with_one_line_and_touches_nothing(capsys, tmp_path, monkeypatch,
                                                       good_files, argv, files, words):
    for name in GOOD_NAMES:
        (tmp_path / name).write_bytes((good_files / name).read_bytes())
    (tmp_path / "out.npz").write_bytes(b"an existing output")
    (tmp_path / "out.csv").write_bytes(b"an existing output")
    for name, content in files.items():
        _write(tmp_path / name, content)
    argv = [str(a) for a in argv]
    if argv[:1] == ["fit"] and len(argv) > 1:
        argv += ["-q"] + ([] if "-o" in argv else ["-o", "out.npz"])
    elif argv[:1] in (["score"], ["sample"]) and len(argv) > 1 and "-o" not in argv:
        argv += ["-o", "out.csv"]
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    # refused: exit 2, one line naming the problem, no traceback, nothing on stdout
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyroem: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    assert out == ""
    # parameters intact: the files read, an existing output, and no new file
    assert _snapshot(tmp_path) == before


def test_cli_corpus_counts():
    """The table of the report: cases per entry point (every one refused with a one-line
    message and every file intact, by the test above)."""
    counts = {}
    for _id, argv, _files, _words in CLI_CASES:
        counts[_entry([str(a) for a in argv])] = counts.get(_entry([str(a) for a in argv]),
                                                            0) + 1
    assert set(counts) >= {"fit gmm", "score gmm", "sample gmm", "fit hmm", "score hmm",
                           "sample hmm", "fit plda", "score plda", "sample plda", "demo",
                           "pyroem (top level)"}
    assert len({i for i, *_ in CLI_CASES}) == len(CLI_CASES)  # ids are unique


# ---------------------------------------------------------------------------- the header rule
def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("content, rows", [
    ("a,b\n1,2\n3,4\n5,6\n", [[1, 2], [3, 4], [5, 6]]),  # a header: no field is a number
    ("# c\n\nx,y\n1,2\n# more\n3,4\n5,6\n", [[1, 2], [3, 4], [5, 6]]),  # comments, blank
    ("1,2\n3,4\n5,6\n", [[1, 2], [3, 4], [5, 6]]),     # no header
    ("-1e3,2\n3,4\n5,6\n7,8\n", [[-1e3, 2], [3, 4], [5, 6], [7, 8]]),  # numbers are data
    ('"a","b"\n1,2\n3,4\n', [[1, 2], [3, 4]]),         # quoted names
])
def test_score_prints_one_line_per_data_row(capsys, tmp_path, content, rows):
    params = tmp_path / "p.npz"
    np.savez(params, **_gmm_params())
    data = tmp_path / "x.csv"
    data.write_text(content)
    code, out, err = _run(capsys, "score", "gmm", params, data)
    assert code == 0 and err == ""
    assert len(out.splitlines()) == len(rows)
    model = GMMModel(2, 2).double()
    model.weights = torch.tensor([0.5, 0.5], dtype=torch.float64)
    model.means = torch.tensor([[0.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    model.covariances = torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone()
    want = model.log_prob(torch.tensor(rows, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(np.loadtxt(out.splitlines()), want, rtol=1e-9)


def test_malformed_first_row_is_an_error_not_a_header(capsys, tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("3.6,79x\n1,2\n3,4\n5,6\n")
    params = tmp_path / "p.npz"
    np.savez(params, **_gmm_params())
    for argv in (["fit", "gmm", data, "-q"], ["score", "gmm", params, data]):
        code, out, err = _run(capsys, *argv)
        assert code == 2 and out == ""
        assert err.strip() == (f"pyroem: error: {data}, line 1: row 1, column 2: '79x' is "
                               "not a number")


# ---------------------------------------------------------------------------- PLDA labels
def test_plda_string_labels_fit_and_score_end_to_end(capsys, tmp_path):
    truth = PLDA(2).double()
    truth.between_cov = 4 * torch.eye(2, dtype=torch.float64)
    truth.within_cov = torch.eye(2, dtype=torch.float64)
    x, codes, _ = truth.sample(12, 4, seed=0)
    names = [f"speaker-{'abcdefghijkl'[c]}" for c in codes.tolist()]
    data = tmp_path / "named.csv"
    data.write_text("speaker,e1,e2\n" + "".join(f"{n},{a!r},{b!r}\n" for n, (a, b)
                                               in zip(names, x.tolist())))
    params = tmp_path / "p.npz"
    code, out, err = _run(capsys, "fit", "plda", data, "-q", "-o", params)
    assert code == 0, err
    api = PLDA(2)
    api.fit(x, names, tol=1e-6, max_iter=200, seed=0)
    with np.load(params) as saved:
        np.testing.assert_allclose(saved["between_cov"], api.between_cov.numpy(), rtol=1e-8)
        np.testing.assert_allclose(saved["within_cov"], api.within_cov.numpy(), rtol=1e-8)
    code, out, err = _run(capsys, "score", "plda", params, data)
    assert code == 0 and err == ""
    scores = np.loadtxt(out.splitlines())
    assert scores.shape == (len(names),)  # one per row; a speaker's rows sum to log p(X_s)
    per_speaker = np.bincount(np.unique(names, return_inverse=True)[1], weights=scores)
    np.testing.assert_allclose(per_speaker, api.log_prob(x, names).numpy(), rtol=1e-8)
    # the same speakers under integer labels score the same (sorted names = sorted codes)
    ints = tmp_path / "ints.csv"
    ints.write_text("".join(f"{c},{a!r},{b!r}\n" for c, (a, b)
                            in zip(codes.tolist(), x.tolist())))
    code, out2, _ = _run(capsys, "score", "plda", params, ints)
    assert code == 0
    np.testing.assert_allclose(np.loadtxt(out2.splitlines()), scores, rtol=1e-12)


# ---------------------------------------------------------------------------- pipes, warnings
def test_closed_stdout_pipe_exits_zero_silently(tmp_path):
    params = tmp_path / "p.npz"
    np.savez(params, **_gmm_params())
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "pyroem", "sample", "gmm", str(params),
                             "200000", "--seed", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    first = proc.stdout.readline()  # what `| head -1` reads, then it closes the pipe
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert first.count(b",") == 1
    assert proc.returncode == 0, err
    assert err == b""


def test_cli_warning_is_one_line_and_fit_still_succeeds(capsys, tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("\n".join(f"{i % 7},{(i * 3) % 5}" for i in range(30)) + "\n")
    code, out, err = _run(capsys, "fit", "gmm", data, "-k", 3, "--max-iter", 1, "-q")
    assert code == 0 and "not converged" in out
    assert err.strip().splitlines() == [
        ("pyroem: warning: em did not converge in 1 iterations (tol=1e-06 per item): "
         "increase max_iter or tol")]


def test_cli_sample_leaves_the_global_generator_alone(capsys, tmp_path):
    params = tmp_path / "p.npz"
    np.savez(params, **_gmm_params())
    state = torch.get_rng_state()
    code, out, _ = _run(capsys, "sample", "gmm", params, 5, "--seed", 4)
    assert code == 0 and torch.equal(state, torch.get_rng_state())
    assert _run(capsys, "sample", "gmm", params, 5, "--seed", 4)[1] == out


# ============================================================================ scikit-learn
def _x(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n // 2, 2)), rng.normal(5, 1, (n - n // 2, 2))])


@pytest.fixture(scope="module")
def fitted():
    """One fitted estimator of each kind (shared: every test checks that it stays as it
    was, so they cannot disturb each other)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        return {"gmm": GaussianMixture(2, random_state=0).fit(_x()),
                "hmm": GaussianHMM(2, random_state=0, n_iter=5).fit(_x())}


def _fitted_state(est):
    """Every fitted attribute (trailing underscore) and the pyroem model's tensors."""
    state = {}
    for name, value in vars(est).items():
        if name.endswith("_") and name != "model_":
            state[name] = np.array(value, copy=True) if isinstance(value, np.ndarray) else value
    state["model_"] = (id(est.model_), {k: v.detach().clone()
                                         for k, v in est.model_.state_dict().items()
                                         if torch.is_tensor(v)})
    return state


def _assert_same_state(before, after):
    assert before.keys() == after.keys()
    for name, value in before.items():
        other = after[name]
        if name == "model_":
            assert value[0] == other[0]  # the same model object
            assert value[1].keys() == other[1].keys()
            for key, tensor in value[1].items():
                assert tensor.dtype == other[1][key].dtype
                assert torch.equal(tensor, other[1][key]), key  # bitwise (no NaN here)
        elif isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and value.shape == other.shape
            assert value.tobytes() == other.tobytes(), name
        else:
            assert type(value) is type(other) and value == other, name


BAD_X = {
    "nan": (np.array([[np.nan, 1.0], [1.0, 2.0], [3.0, 1.0]]), "NaN"),
    "inf": (np.array([[np.inf, 1.0], [1.0, 2.0], [3.0, 1.0]]), "infinity"),
    "empty": (np.zeros((0, 2)), "0 sample"),
    "1d": (np.zeros(3), "Expected 2D array"),
    "3d": (np.zeros((3, 2, 2)), "dim 3"),
    "scalar": (3.0, "Expected 2D array"),
    "wide": (np.zeros((3, 3)), "3 features"),
    "strings": (np.array([["a", "b"], ["c", "d"]]), "could not convert string to float"),
    "complex": (np.ones((3, 2)) * 1j, "Complex data"),
}

# (id, kind, method, args, kwargs, error type, match). ``kind``: which fitted estimator.
SK_CASES = []
for _kind in ("gmm", "hmm"):
    _methods = ["score", "score_samples", "predict", "predict_proba", "bic", "aic"]
    if _kind == "hmm":
        _methods.append("decode")
    for _method in _methods:
        for _bad, (_value, _match) in BAD_X.items():
            SK_CASES.append((f"{_kind}-{_method}-{_bad}", _kind, _method, (_value,), {},
                             ValueError, _match))
    for _bad, (_value, _match) in BAD_X.items():
        if _bad != "wide":  # a new fit may change the width
            SK_CASES.append((f"{_kind}-fit-{_bad}", _kind, "fit", (_value,), {}, ValueError,
                             _match))
    SK_CASES += [
        (f"{_kind}-fit-k-gt-n-other-width", _kind, "fit", (np.zeros((1, 3)),), {},
         ValueError, "n_samples >= n_components"),
        (f"{_kind}-fit_predict-nan", _kind, "fit_predict", (BAD_X["nan"][0],), {},
         ValueError, "NaN"),
    ]
    for _n, _match in ((0, "n_samples must be an integer >= 1"), (-1, "n_samples"),
                       (2.5, "n_samples"), ("a", "n_samples"), (None, "n_samples")):
        SK_CASES.append((f"{_kind}-sample-{_n}", _kind, "sample", (_n,), {}, ValueError,
                         _match))
for _method in ("fit", "score", "score_samples", "predict", "predict_proba", "bic", "aic",
                "decode"):
    for _lengths, _match in (([1, 1], "sum to the number of rows"),
                             ([40, 0], "sum to the number of rows"),
                             ([-1, 41], "sum to the number of rows"),
                             ([20.0, 20.0], "array of integers"),
                             ([[20, 20]], "1-D"), ([], "non-empty"),
                             (["20", "20"], "integers"), (40, "1-D")):
        SK_CASES.append((f"hmm-{_method}-lengths-{_lengths!r}", "hmm", _method, (_x(),),
                         {"lengths": _lengths}, ValueError, _match))
    SK_CASES += [
        (f"hmm-{_method}-ids-short", "hmm", _method, (_x(),),
         {"sequence_ids": np.arange(39)}, ValueError, "one entry per row"),
        (f"hmm-{_method}-lengths-and-ids", "hmm", _method, (_x(),),
         {"lengths": [20, 20], "sequence_ids": np.zeros(40)}, ValueError, "not both"),
    ]
SK_CASES += [
    ("hmm-decode-algorithm", "hmm", "decode", (_x(),), {"algorithm": "beam"}, ValueError,
     "unknown algorithm 'beam'"),
    ("hmm-sample-random-state", "hmm", "sample", (3,), {"random_state": "x"}, ValueError,
     "seed"),
]


@pytest.mark.parametrize("kind, method, args, kwargs, error, match",
                         [pytest.param(*c[1:], id=c[0]) for c in SK_CASES])
def test_wrapper_refuses_and_keeps_its_fit(fitted, kind, method, args, kwargs, error, match):
    est = fitted[kind]
    before = _fitted_state(est)
    with pytest.raises(error, match=match):
        getattr(est, method)(*args, **kwargs)
    _assert_same_state(before, _fitted_state(est))


# invalid parameter values: (id, kind, parameters, match); refused by a re-fit of the
# fitted estimator, which then keeps its earlier fit
GOOD_X = _x()
PARAM_CASES = [
    ("n_components-negative", {"n_components": -1}, "n_components must be an integer >= 1"),
    ("n_components-zero", {"n_components": 0}, "n_components"),
    ("n_components-float", {"n_components": 2.5}, "n_components"),
    ("n_components-text", {"n_components": "2"}, "n_components"),
    ("n_components-bool", {"n_components": True}, "n_components"),
    ("n_components-gt-n", {"n_components": 41}, "n_samples >= n_components"),
    ("tol-negative", {"tol": -1}, "tol must be a finite number >= 0"),
    ("tol-nan", {"tol": float("nan")}, "tol"),
    ("tol-inf", {"tol": float("inf")}, "tol"),
    ("tol-text", {"tol": "small"}, "tol"),
    ("reg_covar-negative", {"reg_covar": -1e-3}, "reg_covar"),
    ("reg_covar-nan", {"reg_covar": float("nan")}, "reg_covar"),
    ("n_init-zero", {"n_init": 0}, "n_init must be an integer >= 1"),
    ("covariance_type", {"covariance_type": "banana"}, "unknown covariance_type 'banana'"),
    ("method", {"method": "gibbs"}, "unknown method 'gibbs'"),
    ("init_params", {"init_params": "spectral"}, "unknown init_params 'spectral'"),
    ("random_state", {"random_state": "x"}, "seed"),
]
GMM_PARAM_CASES = [
    ("max_iter-zero", {"max_iter": 0}, "max_iter must be an integer >= 1"),
    ("max_iter-float", {"max_iter": 2.5}, "max_iter"),
]
HMM_PARAM_CASES = [
    ("n_iter-zero", {"n_iter": 0}, "n_iter must be an integer >= 1"),
    ("n_iter-negative", {"n_iter": -5}, "n_iter"),
    ("algorithm", {"algorithm": "beam"}, "unknown algorithm 'beam'"),
    ("startprob_prior-negative", {"startprob_prior": -1.0}, "startprob_prior"),
    ("startprob_prior-nan", {"startprob_prior": float("nan")}, "startprob_prior"),
    ("startprob_prior-shape", {"startprob_prior": [1.0, 1.0, 1.0]}, "startprob_prior"),
    ("transmat_prior-shape", {"transmat_prior": np.ones((3, 3))}, "transmat_prior"),
    ("transmat_prior-text", {"transmat_prior": "flat"}, "transmat_prior"),
    ("params-letters", {"params": "xyz"}, "params"),
]


@pytest.mark.parametrize("kind, params, match", [
    *[pytest.param("gmm", p, m, id=f"gmm-{i}") for i, p, m in PARAM_CASES + GMM_PARAM_CASES],
    *[pytest.param("hmm", p, m, id=f"hmm-{i}") for i, p, m in PARAM_CASES + HMM_PARAM_CASES],
])
def test_wrapper_refuses_invalid_parameters_and_keeps_its_fit(fitted, kind, params, match):
    est = fitted[kind]
    before = _fitted_state(est)
    good = {k: v for k, v in est.get_params().items() if k in params}
    est.set_params(**params)
    try:
        with pytest.raises(ValueError, match=match):
            est.fit(GOOD_X)
    finally:
        est.set_params(**good)
    _assert_same_state(before, _fitted_state(est))


UNFITTED_METHODS = ["score", "score_samples", "bic", "aic", "predict", "predict_proba",
                    "sample"]


@pytest.mark.parametrize("est, method", [
    *[pytest.param(GaussianMixture(2), m, id=f"gmm-{m}") for m in UNFITTED_METHODS],
    *[pytest.param(GaussianHMM(2), m, id=f"hmm-{m}") for m in UNFITTED_METHODS + ["decode"]],
])
def test_unfitted_raises_not_fitted_error(est, method):
    est = clone(est)
    args = (3,) if method == "sample" else (GOOD_X,)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(est, method)(*args)
    # also when the input is bad: not fitted is the first thing said
    if method != "sample":
        with pytest.raises(NotFittedError):
            getattr(est, method)(BAD_X["nan"][0])
    assert not hasattr(est, "model_")


# ---------------------------------------------------------------------------- ConvergenceWarning
@pytest.mark.parametrize("make", [lambda: GaussianMixture(3, max_iter=1, random_state=0),
                                  lambda: GaussianHMM(3, n_iter=1, random_state=0)],
                         ids=["gmm", "hmm"])
def test_unconverged_fit_warns_with_sklearn_convergence_warning(make):
    est = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(GOOD_X)
    assert [w.category for w in caught] == [SklearnConvergenceWarning]
    assert "did not converge in 1 iterations" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the caller of fit
    assert not est.converged_
    # filtered as scikit-learn users filter GaussianMixture's warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        make().fit(GOOD_X)
    assert caught == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", SklearnConvergenceWarning)
        with pytest.raises(SklearnConvergenceWarning):
            make().fit(GOOD_X)
    # pyroem's own class never escapes the wrapper, even when it is made an error
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", ConvergenceWarning)
        make().fit(GOOD_X)
    assert [w.category for w in caught] == [SklearnConvergenceWarning]


def test_one_convergence_warning_per_fit_with_restarts():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GaussianMixture(3, max_iter=1, n_init=3, random_state=0).fit(GOOD_X)
    assert [w.category for w in caught] == [SklearnConvergenceWarning]
    assert str(caught[0].message).startswith("3 of 3 initialisations did not converge")


def test_converged_fit_does_not_warn():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = GaussianMixture(2, random_state=0).fit(GOOD_X)
    assert est.converged_ and caught == []


class _ChattyModel(GMMModel):
    """A pyroem model whose fit also emits an unrelated warning."""

    def fit(self, *args, **kwargs):
        warnings.warn("something else", RuntimeWarning)
        return super().fit(*args, **kwargs)


class _ChattyMixture(GaussianMixture):
    def _make_model(self, n_features):
        return _ChattyModel(self.n_components, n_features, self.covariance_type,
                            self.reg_covar)


def test_other_warnings_pass_through_unchanged():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _ChattyMixture(3, max_iter=1, random_state=0).fit(GOOD_X)
    categories = [w.category for w in caught]
    assert categories == [RuntimeWarning, SklearnConvergenceWarning]
    assert str(caught[0].message) == "something else"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", RuntimeWarning)  # the user's filters still apply
        _ChattyMixture(2, random_state=0).fit(GOOD_X)
    assert caught == []


@pytest.mark.parametrize("make", [lambda: GaussianMixture(5), lambda: GaussianHMM(5)],
                         ids=["gmm", "hmm"])
def test_refused_first_fit_leaves_the_estimator_unfitted(make):
    est = make()
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        est.fit(np.zeros((3, 4)))
    assert not hasattr(est, "n_features_in_") and not hasattr(est, "model_")
    with pytest.raises(NotFittedError):
        est.score(GOOD_X)

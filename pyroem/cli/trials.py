"""
Verification trial lists for ``pyroem score plda --trials``: Kaldi's format, one trial per
line, ``ENROLL_ID TEST_ID`` and optionally a key, ``target`` or ``nontarget``.

Ids name rows of the data files by their first column: every row whose id is
``ENROLL_ID`` enrols that model (one or more embeddings); ``TEST_ID`` must name exactly one
row. The scores are PLDA log-likelihood ratios, optionally s-normalised against a cohort
(:func:`pyroem.calibration.snorm`); with keys, a summary (EER, minDCF, actual DCF,
:math:`C_\\text{llr}`) goes to stderr.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from pyroem.calibration import snorm
from pyroem.cli.io import CLIError, read_labelled
from pyroem.metrics import actual_dcf, cllr, eer, min_dcf

KEYS = {"target": True, "nontarget": False}


def read_trials(path):
    """``(enroll_ids, test_ids, keys)``: lists of strings and, when every line has a key,
    a bool array (else ``None``)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise CLIError(f"{path}: cannot read the trial list ({e.strerror})") from None
    enroll, test, keys = [], [], []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] not in KEYS):
            raise CLIError(f"{path}: line {number}: expected 'ENROLL_ID TEST_ID "
                           f"[target|nontarget]', got {line.strip()!r}")
        enroll.append(fields[0])
        test.append(fields[1])
        keys.append(KEYS[fields[2]] if len(fields) == 3 else None)
    if not enroll:
        raise CLIError(f"{path}: no trials")
    has_keys = [k is not None for k in keys]
    if any(has_keys) and not all(has_keys):
        raise CLIError(f"{path}: some trials have a key (target/nontarget) and some do not")
    return enroll, test, (np.array(keys, dtype=bool) if all(has_keys) else None)


def id_strings(labels):
    """Row ids as the strings a trial list uses (``3.0`` read as a number is ``"3"``)."""
    if labels.dtype.kind == "f":
        return [f"{v:g}" for v in labels]
    return [str(v) for v in labels]


def read_rows(path, dim):
    """``{id: (n, dim) tensor}`` of a labelled data file."""
    labels, x = read_labelled(path, "embedding")
    if x.shape[1] != dim:
        raise CLIError(f"{path}: the model takes {dim} embedding columns after the id "
                       f"column, got {x.shape[1]}")
    rows = {}
    for i, name in enumerate(id_strings(labels)):
        rows.setdefault(name, []).append(i)
    x = torch.as_tensor(x)
    return {name: x[idx] for name, idx in rows.items()}


def _lookup(rows, ids, path, what):
    missing = sorted(set(ids) - set(rows))
    if missing:
        raise CLIError(f"{path}: no row with the {what} id {missing[0]!r} "
                       f"({len(missing)} {what} ids missing)")


def score_trials(model, trials, data, enroll=None, cohort=None, top_k=None):
    """Scores (float64 numpy) of the trials in ``trials`` (a path), in its order."""
    enroll_ids, test_ids, keys = read_trials(trials)
    tests = read_rows(data, model.dim)
    models = tests if enroll is None else read_rows(enroll, model.dim)
    _lookup(models, enroll_ids, enroll or data, "enrolment")
    _lookup(tests, test_ids, data, "test")
    e_names, t_names = sorted(set(enroll_ids)), sorted(set(test_ids))
    several = [t for t in t_names if tests[t].shape[0] != 1]
    if several:
        raise CLIError(f"{data}: the test id {several[0]!r} names {tests[several[0]].shape[0]} "
                       "rows; a test id must name exactly one embedding")
    e_sets = [models[e] for e in e_names]
    t_mat = torch.cat([tests[t] for t in t_names])
    with torch.no_grad():
        scores = model.score_matrix(e_sets, t_mat).double()
        if cohort is not None:
            c_mat = torch.cat(list(read_rows(cohort, model.dim).values()))
            enroll_c = model.score_matrix(e_sets, c_mat).double()
            test_c = model.score_matrix([c[None] for c in c_mat], t_mat).double().T
            try:
                scores = snorm(scores, enroll_c, test_c, top_k=top_k)
            except ValueError as e:
                raise CLIError(f"{cohort}: {e}") from None
    e_index = {e: i for i, e in enumerate(e_names)}
    t_index = {t: i for i, t in enumerate(t_names)}
    picked = scores[[e_index[e] for e in enroll_ids], [t_index[t] for t in test_ids]]
    return enroll_ids, test_ids, keys, picked.numpy()


def write_trial_scores(enroll_ids, test_ids, scores, output):
    """``ENROLL_ID TEST_ID SCORE`` lines (Kaldi's score format) to ``output`` or stdout."""
    text = "".join(f"{e} {t} {s:.6f}\n" for e, t, s in zip(enroll_ids, test_ids, scores))
    if output is None:
        sys.stdout.write(text)
    else:
        with open(output, "w") as f:
            f.write(text)


def summary(keys, scores, p_target=0.01):
    """One line: the trial counts, EER, minDCF, actual DCF and Cllr of keyed scores."""
    tar, non = scores[keys], scores[~keys]
    if not len(tar) or not len(non):
        return f"{len(tar)} target and {len(non)} non-target trials: no EER without both"
    return (f"{len(tar)} target and {len(non)} non-target trials: EER {100 * eer(tar, non):.2f}%, "
            f"minDCF({p_target:g}) {min_dcf(tar, non, p_target=p_target):.4f}, "
            f"actDCF({p_target:g}) {actual_dcf(tar, non, p_target=p_target):.4f}, "
            f"Cllr {cllr(tar, non):.4f}")

"""Hardening of the models and of the EM step, tried as a demanding user would.

A corpus of bad inputs (``CASES``, one ``pytest.mark.parametrize`` table) against every
public entry point of the built-in models and of ``EM.step`` / ``fit_em``: constructors,
setters, ``fit`` with each method, ``log_prob``, ``posterior``, ``predict``, ``decode``,
``sample``, ``llr``. Each case asserts the error type, a message that names the problem,
and that every parameter (``state_dict`` tensors, the param store for user models) is
bitwise unchanged. Then what the refusals protect: the transactional M-step, sampling that
leaves the global random state alone, integer data promoted to float64, float32 fits of
data that float32 fits in scikit-learn, setters that accept what they should.
"""

import random
import warnings
from collections import namedtuple

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from pyroem.infer import EM, fit_em
from pyroem.infer.loop import ConvergenceWarning
from pyroem.models import GMMHMM, PLDA, CategoricalHMM, GaussianHMM, GaussianMixture

NAN, INF = float("nan"), float("inf")
F64 = torch.float64


# ---------------------------------------------------------------------- data
def _blobs(n=40, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0] * d, [4.0] * d], dtype=F64)
    return centers[torch.arange(n) % 2] + torch.randn(n, d, generator=g, dtype=F64)


X = _blobs()  # (40, 2) float64
SEQ = _blobs(30)  # one sequence (30, 2)
SYMBOLS = torch.arange(30) % 3  # (30,) symbols in [0, 3)
EMB = _blobs(40, 3, seed=1)  # PLDA embeddings (40, 3)
LABELS = torch.arange(40) // 5  # 8 speakers of 5


def _with(x, index, value):
    x = x.clone()
    x[index] = value
    return x


# ---------------------------------------------------------------------- models
def _quiet_fit(m, *data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(*data, max_iter=2, tol=0, seed=0, **kw)
    return m


def gmm(cov="full"):
    return _quiet_fit(GaussianMixture(2, 2, cov).double(), X)


def hmm():
    return _quiet_fit(GaussianHMM(2, 2).double(), SEQ)


def gmmhmm():
    return _quiet_fit(GMMHMM(2, 2, 2).double(), SEQ)


def cathmm():
    return _quiet_fit(CategoricalHMM(2, 3).double(), SYMBOLS)


def plda():
    return _quiet_fit(PLDA(3).double(), EMB, LABELS)


MODELS = {"gmm": gmm, "gmm_diag": lambda: gmm("diag"), "hmm": hmm, "gmmhmm": gmmhmm,
          "cathmm": cathmm, "plda": plda, "none": lambda: None}


def user_model(data):
    """A two-component 1-D mixture written by a user (pyro.params in the param store)."""
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=F64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0], dtype=F64))
    scale = pyro.param("scale", torch.tensor(1.0, dtype=F64), constraint=constraints.positive)
    with pyro.plate("data", data.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scale), obs=data)


Y = torch.cat([torch.randn(20, generator=torch.Generator().manual_seed(2), dtype=F64) - 2,
               torch.randn(20, generator=torch.Generator().manual_seed(3), dtype=F64) + 2])


# ---------------------------------------------------------------------- the corpus
Case = namedtuple("Case", "entry model action exc match")
CASES = []


def case(entry, model, action, match, exc=ValueError):
    CASES.append(Case(entry, model, action, exc, match))


# constructors (no parameters exist yet: "intact" trivially)
for make, match in [
    (lambda: GaussianMixture(0, 2), "num_components"),
    (lambda: GaussianMixture(2.5, 2), "num_components"),
    (lambda: GaussianMixture(True, 2), "num_components"),
    (lambda: GaussianMixture(2, 0), "dim"),
    (lambda: GaussianMixture(2, 2, "banded"), "covariance_type"),
    (lambda: GaussianMixture(2, 2, reg_covar=-1.0), "reg_covar"),
    (lambda: GaussianMixture(2, 2, reg_covar=NAN), "reg_covar"),
    (lambda: GaussianMixture(2, 2, reg_covar=INF), "reg_covar"),
    (lambda: GaussianMixture(2, 2, reg_covar="big"), "reg_covar"),
    (lambda: GaussianHMM(0), "num_states"),
    (lambda: GaussianHMM(2, 2, "banded"), "covariance_type"),
    (lambda: GaussianHMM(2, 2, reg_covar=-1e-3), "reg_covar"),
    (lambda: GaussianHMM(2, 2, params="stmx"), "params"),
    (lambda: GaussianHMM(2, 2, start_concentration=-1.0), "start_concentration"),
    (lambda: GaussianHMM(2, 2, trans_concentration=[1.0, 2.0, 3.0]), "trans_concentration"),
    (lambda: GaussianHMM(2, 2, final_states=[5]), "final_states"),
    (lambda: GaussianHMM(2, 2, block_length=0), "block_length"),
    (lambda: GMMHMM(2, num_components=0), "num_components"),
    (lambda: GMMHMM(2, 2, 2, reg_covar=INF), "reg_covar"),
    (lambda: CategoricalHMM(2, 0), "num_symbols"),
    (lambda: CategoricalHMM(2, 3, params="stz"), "params"),
    (lambda: PLDA(0), "dim"),
    (lambda: PLDA(2, reg_covar=-1.0), "reg_covar"),
    (lambda: PLDA(2, reg_covar=NAN), "reg_covar"),
]:
    case("constructor", "none", lambda m, make=make: make(), match)

# setters: shape, finiteness, dtype, constraint
SETTERS = {
    "gmm": [
        ("weights", [0.9, 0.9], "sum to 1"),
        ("weights", [-0.5, 1.5], ">= 0"),
        ("weights", [1.0], r"shape \(2,\)"),
        ("weights", [NAN, 1.0], "finite"),
        ("weights", [[0.5, 0.5]], r"shape \(2,\)"),
        ("weights", ["a", "b"], "numeric"),
        ("means", torch.zeros(3, 2), r"shape \(2, 2\)"),
        ("means", [[NAN, 0.0], [0.0, 0.0]], "finite"),
        ("means", [[INF, 0.0], [0.0, 0.0]], "finite"),
        ("means", torch.zeros(2, 2, dtype=torch.complex64), "real"),
        ("means", torch.zeros(2), r"shape \(2, 2\)"),
        ("covariances", torch.eye(2), "shape"),
        ("covariances", torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2), "symmetric"),
        ("covariances", -torch.eye(2).expand(2, 2, 2), "positive definite"),
        ("covariances", torch.full((2, 2, 2), NAN), "finite"),
        ("covariances", torch.zeros(2, 2, 2), "positive definite"),
    ],
    "gmm_diag": [
        ("covariances", [[1.0, -1.0], [1.0, 1.0]], "> 0"),
        ("covariances", [[1.0, 0.0], [1.0, 1.0]], "> 0"),
        ("covariances", torch.ones(2, 2, 2), "shape"),
        ("covariances", [[1.0, INF], [1.0, 1.0]], "finite"),
    ],
    "hmm": [
        ("start_probs", [0.9, 0.9], "sum to 1"),
        ("start_probs", [1.5, -0.5], ">= 0"),
        ("start_probs", [1.0, 0.0, 0.0], "shape"),
        ("trans_probs", [[0.5, 0.6], [0.5, 0.5]], "sum to 1"),
        ("trans_probs", [[NAN, 1.0], [0.5, 0.5]], "finite"),
        ("trans_probs", [0.5, 0.5], "shape"),
        ("means", torch.zeros(3, 2), r"shape \(2, 2\)"),
        ("means", [[NAN, 0.0], [0.0, 0.0]], "finite"),
        ("covariances", torch.tensor([[[1.0, 2.0], [0.0, 1.0]]] * 2), "symmetric"),
        ("covariances", torch.tensor([[[1.0, 2.0], [2.0, 1.0]]] * 2), "positive definite"),
    ],
    "gmmhmm": [
        ("weights", [[0.9, 0.9], [0.5, 0.5]], "sum to 1"),
        ("weights", [[0.5, 0.5]], "shape"),
        ("means", torch.zeros(2, 3, 2), r"shape \(2, 2, 2\)"),
        ("means", torch.full((2, 2, 2), INF), "finite"),
        ("covariances", -torch.ones(2, 2, 2), "> 0"),
    ],
    "cathmm": [
        ("emission_probs", [[0.5, 0.5, 0.5], [0.2, 0.3, 0.5]], "sum to 1"),
        ("emission_probs", [[1.2, -0.2, 0.0], [0.2, 0.3, 0.5]], ">= 0"),
        ("emission_probs", [[0.5, 0.5], [0.5, 0.5]], "shape"),
        ("start_probs", [True, False], "real-valued"),
    ],
    "plda": [
        ("mean", [NAN, 0.0, 0.0], "finite"),
        ("mean", [0.0, 0.0], r"shape \(3,\)"),
        ("between_cov", torch.eye(2), "shape"),
        ("between_cov", torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
         "symmetric"),
        ("within_cov", -torch.eye(3), "positive definite"),
        ("within_cov", torch.full((3, 3), INF), "finite"),
    ],
}
for model, rows in SETTERS.items():
    for name, value, match in rows:
        case("setter", model, lambda m, name=name, value=value: setattr(m, name, value), match)

# fit, with each method
BAD_MATRICES = [
    (_with(X, (3, 1), NAN), "NaN or inf"),
    (_with(X, (5, 0), INF), "NaN or inf"),
    (X[:0], "empty"),
    (X[None], "shape"),
    (torch.zeros(40, 3, dtype=F64), r"shape \(N, 2\)"),
    (X.to(torch.complex128), "real-valued"),
    ([["a", "b"], ["c", "d"]], "numeric"),
    ([[1.0, 2.0], [3.0]], "numeric"),
    (X[:1], "at least num_components"),
]
for method in ("em", "viterbi", "svi"):
    for data, match in BAD_MATRICES:
        case(f"fit {method}", "gmm", lambda m, d=data, me=method: m.fit(d, method=me), match)
    for data, match in [(_with(SEQ, (2, 0), NAN), "NaN or inf"), (SEQ[None, :, :1], "features"),
                        (SEQ[:1], "at least num_states"),
                        ([SEQ, torch.zeros(0, 2, dtype=F64)], "empty")]:
        case(f"fit {method}", "hmm", lambda m, d=data, me=method: m.fit(d, method=me), match)
    case(f"fit {method}", "hmm",
         lambda m, me=method: m.fit(torch.stack([SEQ, SEQ]), torch.tensor([30, 31]), method=me),
         "lengths")
    case(f"fit {method}", "hmm",
         lambda m, me=method: m.fit(torch.stack([SEQ, SEQ]), torch.tensor([30]), method=me),
         "one entry per sequence")
    case(f"fit {method}", "hmm",
         lambda m, me=method: m.fit(torch.stack([SEQ, SEQ]), torch.tensor([30.0, 2.0]),
                                    method=me), "integers")
    case(f"fit {method}", "cathmm", lambda m, me=method: m.fit(_with(SYMBOLS, 4, 3), method=me),
         r"\[0, 3\)")
    case(f"fit {method}", "cathmm", lambda m, me=method: m.fit(_with(SYMBOLS, 4, -1), method=me),
         r"\[0, 3\)")
    case(f"fit {method}", "cathmm",
         lambda m, me=method: m.fit(SYMBOLS.double() + 0.5, method=me), "integer symbols")
    case(f"fit {method}", "gmmhmm", lambda m, me=method: m.fit(_with(SEQ, (0, 1), INF), method=me),
         "NaN or inf")
    if method != "viterbi":
        case(f"fit {method}", "plda", lambda m, me=method: m.fit(_with(EMB, (1, 1), NAN), LABELS,
                                                                   method=me), "NaN or inf")
        case(f"fit {method}", "plda", lambda m, me=method: m.fit(EMB, LABELS[:10], method=me),
             "one entry per embedding")
        case(f"fit {method}", "plda", lambda m, me=method: m.fit(EMB, torch.zeros(40), method=me),
             "at least 2 speakers")
        case(f"fit {method}", "plda", lambda m, me=method: m.fit(EMB[:, :2], LABELS, method=me),
             r"shape \(N, 3\)")
    else:
        case("fit viterbi", "plda", lambda m: m.fit(EMB, LABELS, method="viterbi"), "viterbi")
    # unknown options and invalid values
    for model, data in [("gmm", (X,)), ("hmm", (SEQ,)), ("plda", (EMB, LABELS))]:
        if model == "plda" and method == "viterbi":
            continue
        for kw, match in [({"init": "kmeans"}, "unknown init"), ({"max_iter": 0}, "max_iter"),
                          ({"tol": -1.0}, "tol"), ({"tol": NAN}, "tol"),
                          ({"num_restarts": 0}, "num_restarts"),
                          ({"record_decomposition": "sometimes"}, "record_decomposition")]:
            case(f"fit {method}", model,
                 lambda m, d=data, kw=kw, me=method: m.fit(*d, method=me, **kw), match)
case("fit em", "gmm", lambda m: m.fit(X, method="gibbs"), "unknown method")
case("fit em", "hmm", lambda m: m.fit(SEQ, method="baum"), "unknown method")

# scoring: log_prob, posterior, predict, decode
for entry in ("log_prob", "posterior", "predict"):
    for data, match in BAD_MATRICES[:-1]:
        case(entry, "gmm", lambda m, d=data, e=entry: getattr(m, e)(d), match)
    for data, match in [(_with(SEQ, (1, 1), NAN), "NaN or inf"), (SEQ[:, :1], "features"),
                        (SEQ.to(torch.complex128), "real-valued")]:
        case(entry, "hmm", lambda m, d=data, e=entry: getattr(m, e)(d), match)
    case(entry, "cathmm", lambda m, e=entry: getattr(m, e)(_with(SYMBOLS, 0, 7)), r"\[0, 3\)")
case("log_prob", "plda", lambda m: m.log_prob(_with(EMB, (0, 0), INF), LABELS), "NaN or inf")
case("log_prob", "plda", lambda m: m.log_prob(EMB, LABELS[:-1]), "one entry per embedding")
case("posterior", "plda", lambda m: m.posterior(EMB[:, :2], LABELS), r"shape \(N, 3\)")
case("posterior", "plda", lambda m: m.posterior(EMB, [[0, 1]] * 40), "1-d|hashable|1-dim")
for data, match in [(_with(SEQ, (1, 1), NAN), "NaN or inf"), (SEQ[:, :1], "features")]:
    case("decode", "hmm", lambda m, d=data: m.decode(d), match)
case("decode", "hmm", lambda m: m.decode(SEQ, algorithm="posterior"), "unknown algorithm")
case("decode", "cathmm", lambda m: m.decode(_with(SYMBOLS, 0, 3)), r"\[0, 3\)")
case("decode", "cathmm", lambda m: m.decode([SYMBOLS, SYMBOLS[:0]]), "empty")
case("decode", "gmmhmm",
     lambda m: m.decode(torch.stack([SEQ, SEQ]), torch.tensor([10, 40])), "lengths")

# sample
for model, call in [("gmm", lambda m, *a, **k: m.sample(*a, **k)),
                    ("hmm", lambda m, *a, **k: m.sample(*a, **k)),
                    ("cathmm", lambda m, *a, **k: m.sample(*a, **k))]:
    for args, kw, match in [((0,), {}, ">= 1"), ((-3,), {}, ">= 1"), ((2.5,), {}, "integer"),
                            ((5,), {"seed": "abc"}, "seed"), ((5,), {"seed": 1.5}, "seed")]:
        case("sample", model, lambda m, a=args, k=kw, c=call: c(m, *a, **k), match)
case("sample", "hmm", lambda m: m.sample(5, num_sequences=0), "num_sequences")
for args, kw, match in [((0, 2), {}, "num_speakers"), ((2, 0), {}, "num_per_speaker"),
                        ((2, [1, 2, 3]), {}, "num_per_speaker"),
                        ((2, 2.5), {}, "num_per_speaker"), ((2, 2), {"seed": "x"}, "seed")]:
    case("sample", "plda", lambda m, a=args, k=kw: m.sample(*a, **k), match)

# llr
for enroll, test, match in [
    (EMB[:2, :2], EMB[0], r"enroll must have shape \(N, 3\)"),
    (_with(EMB[:2], (0, 0), NAN), EMB[0], "enroll contains NaN or inf"),
    (EMB[:0], EMB[0], "enroll is empty"),
    (EMB[:2], EMB[0, :2], r"test must have shape \(3,\)"),
    (EMB[:2], _with(EMB[:4], (2, 1), INF), "test contains NaN or inf"),
    (EMB[:2], EMB[:4, :2], "test must have shape"),
    (EMB[:2].to(torch.complex128), EMB[0], "real-valued"),
    ("abc", EMB[0], "numeric"),
]:
    case("llr", "plda", lambda m, e=enroll, t=test: m.llr(e, t), match)


# EM.step on the built-ins' Pyro model and guide (the prepared arguments are checked)
def em_step(m, *args):
    return EM(m.model, m.guide).step(*args)


for data, match in [(torch.zeros(10, 3, dtype=F64), r"shape \(N, 2\), got \(10, 3\)"),
                    (torch.zeros(15, dtype=F64), r"shape \(N, 2\)"),
                    (X.float(), "dtype torch.float32"), (X.long(), "dtype torch.int64"),
                    (X.tolist(), "must be a tensor"), (X[:0], "empty"),
                    (_with(X, (7, 1), INF), r"site 'x'.*inf at index \(7, 1\)"),
                    (_with(X, (2, 0), NAN), r"site 'x'.*nan at index \(2, 0\).*obs_mask")]:
    case("EM.step", "gmm", lambda m, d=data: em_step(m, d), match)
    case("EM.step", "gmm_diag", lambda m, d=data: em_step(m, d), match)
L1 = torch.tensor([30])
for data, lengths, match in [
    (SEQ[None, :, :1], L1, r"shape \(B, T, 2\)"),
    (SEQ, L1, r"shape \(B, T, 2\)"),
    (SEQ[None].float(), L1, "dtype"),
    (_with(SEQ[None], (0, 3, 0), NAN), L1, "NaN or inf"),
    (SEQ[None], torch.tensor([31]), r"lengths must lie in \[1, 30\]"),
    (SEQ[None], torch.tensor([30, 30]), "lengths must be an integer tensor of shape"),
    (SEQ[None], [30], "lengths must be an integer tensor"),
]:
    case("EM.step", "hmm", lambda m, d=data, n=lengths: em_step(m, d, n), match)
    case("EM.step", "gmmhmm", lambda m, d=data, n=lengths: em_step(m, d, n), match)
for data, match in [(SYMBOLS[None] + 1, r"\[0, 3\)"), (SYMBOLS[None].double(), "integer"),
                    (SYMBOLS, r"shape \(B, T\)")]:
    case("EM.step", "cathmm", lambda m, d=data: em_step(m, d, L1), match)
for args, match in [((EMB[:, :2], LABELS), r"shape \(N, 3\)"),
                    ((EMB.float(), LABELS), "dtype"),
                    ((_with(EMB, (4, 2), INF), LABELS), "NaN or inf"),
                    ((EMB, LABELS[:-1]), "speaker must be integer codes"),
                    ((EMB, LABELS.double()), "speaker must be integer codes"),
                    ((EMB, LABELS + 1), "contiguous")]:
    case("EM.step", "plda", lambda m, a=args: em_step(m, *a), match)

# EM.step and fit_em on a user model (its parameters live in the param store)
for data, match in [(_with(Y, 3, INF), r"site 'x'.*inf at index \(3,\)"),
                    (_with(Y, 5, NAN), r"site 'x'.*nan at index \(5,\).*obs_mask"),
                    (_with(Y, 0, -INF), r"site 'x'.*-inf")]:
    case("EM.step", "user", lambda m, d=data: EM(user_model).step(d), match)
    case("fit_em", "user", lambda m, d=data: fit_em(user_model, d), match)
for kw, match in [({"max_iter": 0}, "max_iter"), ({"tol": -1.0}, "tol")]:
    case("fit_em", "user", lambda m, kw=kw: fit_em(user_model, Y, **kw), match)


# ---------------------------------------------------------------------- running a case
def state_of(m):
    """Every parameter, bitwise: the model's state_dict tensors, or the param store."""
    if m is None:
        return {}
    if m == "user":
        store = pyro.get_param_store()
        return {k: v.detach().clone() for k, v in store._params.items()}
    return {k: v.clone() for k, v in m.state_dict().items() if torch.is_tensor(v)}


def bitwise_equal(a, b):
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        and torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8))
        for k in a)


def make(model):
    if model == "user":
        pyro.clear_param_store()
        fit_em(user_model, Y, max_iter=2, tol=0)  # parameters exist and are not initial
        return "user"
    return MODELS[model]()


def run_case(c):
    """``(refused with the expected error and message, parameters intact)``."""
    m = make(c.model)
    before = state_of(m)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            c.action(m)
    except c.exc as e:
        import re

        refused = re.search(c.match, str(e)) is not None
    except Exception:  # noqa: BLE001 - another error type: not refused as expected
        refused = False
    else:
        refused = False
    return refused, bitwise_equal(before, state_of(m))


def _id(c):
    return f"{c.entry}-{c.model}"


@pytest.mark.parametrize("c", CASES, ids=[f"{_id(c)}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_refused_clearly_and_changes_nothing(c):
    m = make(c.model)
    before = state_of(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(c.exc, match=c.match):
            c.action(m)
    assert bitwise_equal(before, state_of(m))


def test_the_corpus_covers_every_entry_point():
    entries = {c.entry for c in CASES}
    for entry in ("constructor", "setter", "fit em", "fit viterbi", "fit svi", "log_prob",
                  "posterior", "predict", "decode", "sample", "llr", "EM.step", "fit_em"):
        assert entry in entries
    assert len(CASES) >= 200


# ---------------------------------------------------------------------- the M-step is a transaction
def test_gmm_m_step_that_fails_leaves_every_parameter_and_the_guide():
    # a constant column and reg_covar=0: the covariance update is singular
    x = X.clone()
    x[:, 1] = 1.0
    m = GaussianMixture(2, 2, reg_covar=0.0).double()
    m.means = [[0.0, 1.0], [4.0, 1.0]]
    em = EM(m.model, m.guide)
    before = state_of(m)
    with pytest.raises(ValueError, match="positive definite"):
        em.step(x)
    assert bitwise_equal(before, state_of(m))  # no q written either


def test_gmmhmm_m_step_that_fails_halfway_is_undone():
    # GMMHMM's M-step sets the mixture weights before the covariances fail: undone
    x = SEQ.clone()
    x[:, 1] = 3.0
    m = GMMHMM(2, 2, 2, "full", reg_covar=0.0).double()
    m.means = torch.tensor([[[0.0, 3.0], [1.0, 3.0]], [[4.0, 3.0], [5.0, 3.0]]], dtype=F64)
    m.weights = [[0.9, 0.1], [0.3, 0.7]]
    before = state_of(m)
    with pytest.raises(ValueError, match="positive definite") as info:
        EM(m.model, m.guide).step(*m.prepare(x))
    assert any("restored" in n for n in getattr(info.value, "__notes__", []))
    assert bitwise_equal(before, state_of(m))


def test_m_step_that_writes_nan_is_refused_and_restored():
    pyro.clear_param_store()
    fit_em(user_model, Y, max_iter=1, tol=0)
    before = state_of("user")

    def bad_m_step(posterior, data):
        with torch.no_grad():
            pyro.param("locs").unconstrained().fill_(NAN)

    with pytest.raises(FloatingPointError, match=r"parameter 'locs'.*restored"):
        EM(user_model, m_step=bad_m_step).step(Y)
    assert bitwise_equal(before, state_of("user"))


class _HalfDone(PyroModule):
    """A user's closed-form model whose maximize sets one parameter, then raises."""

    def __init__(self):
        super().__init__()
        self.loc = PyroParam(torch.zeros(2, dtype=F64))
        self.scale = PyroParam(torch.ones(2, dtype=F64), constraint=constraints.positive)

    def model(self, data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Categorical(torch.ones(2, dtype=F64) / 2))
            pyro.sample("x", dist.Normal(self.loc[z], self.scale[z]), obs=data)

    def expected_statistics(self, posterior, data):
        return {"r": posterior["x"]}

    def maximize(self, stats):
        self.loc = torch.tensor([5.0, 6.0], dtype=F64)
        raise RuntimeError("the second half of the update failed")


def test_user_closed_form_that_fails_halfway_is_undone():
    m = _HalfDone()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(RuntimeError, match="second half"):
        EM(m.model).step(Y)
    assert bitwise_equal(before, dict(m.state_dict()))


def test_a_successful_step_still_writes_the_guide_and_matches_the_loop():
    a, b = GaussianMixture(2, 2).double(), GaussianMixture(2, 2).double()
    for m in (a, b):
        m.means = [[0.0, 0.0], [4.0, 4.0]]
    em = EM(a.model, a.guide)
    em.step(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        b.fit(X, init="given", max_iter=1, tol=0)
    for k, v in a.state_dict().items():
        if torch.is_tensor(v) and not k.startswith("q_"):
            assert torch.equal(v, b.state_dict()[k]), k
    assert a.q_probs.shape == (40, 2)


# ---------------------------------------------------------------------- randomness
def _global_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.mark.parametrize("make_model, draw", [
    (gmm, lambda m, seed: m.sample(50, seed=seed)),
    (plda, lambda m, seed: m.sample(4, 3, seed=seed)),
    (hmm, lambda m, seed: m.sample(20, seed=seed)),
])
def test_sampling_is_seeded_and_leaves_the_global_rng_alone(make_model, draw):
    m = make_model()
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(9)
    before = _global_states()
    first, second, other = draw(m, 7), draw(m, 7), draw(m, 8)
    unseeded = draw(m, None)
    after = _global_states()
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1]) and before[2] == after[2]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])
    assert unseeded[0].shape == first[0].shape


# ---------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_and_boolean_data_become_float64(dtype):
    xi = (X.abs() * 3).round().to(dtype) if dtype != torch.bool else X > 1
    m = GaussianMixture(2, 2, reg_covar=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(xi, max_iter=3, seed=0)
    assert m.dtype == F64 and m.prepare(xi)[0].dtype == F64
    h = GaussianHMM(2, 2, reg_covar=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        h.fit(xi.numpy(), max_iter=2, seed=0)
    assert h.dtype == F64
    p = PLDA(2)
    p.fit(xi, LABELS, max_iter=2, tol=0)
    assert p.dtype == F64


def _digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    return torch.as_tensor(sklearn_datasets.load_digits().data)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_float32_fits_the_digits_as_float64_does(cov):
    # pixels constant within a cluster but not overall: the moments about the data mean
    # cancel in float32 (before: "collapsed" components), and so does the expanded
    # log-density (before: errors of tens of nats)
    x = _digits()
    fits = {}
    for dtype in (torch.float32, F64):
        m = GaussianMixture(10, 64, cov, reg_covar=1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[dtype] = m.fit(x.to(dtype), seed=0, max_iter=8, tol=0)
        assert m.dtype == dtype
        assert all(np.isfinite(fits[dtype].log_likelihood))
    ll32 = np.array(fits[torch.float32].log_likelihood)
    ll64 = np.array(fits[F64].log_likelihood)
    assert np.max(np.abs(ll32 - ll64) / np.abs(ll64)) < 2e-3


def test_float32_log_prob_is_accurate_for_nearly_singular_components():
    x = _digits()
    m = GaussianMixture(10, 64, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(x, seed=0, max_iter=5, tol=0)
    ref = m.log_prob(x)
    m32 = GaussianMixture(10, 64, "full").float()
    m32.load_state_dict({k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                         for k, v in m.state_dict().items()})
    assert float((m32.log_prob(x.float()).double() - ref).abs().mean()) < 1e-3


def test_gaussian_hmm_float32_with_a_constant_dimension_per_state():
    g = torch.Generator().manual_seed(0)
    z = (torch.arange(200) // 20) % 2
    x = torch.randn(200, 3, generator=g, dtype=F64)
    x[:, 2] = torch.where(z == 0, 10.0, 50.0)  # constant within each state
    for cov in ("full", "diag"):
        m = GaussianHMM(2, 3, cov, reg_covar=1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            hist = m.fit(x.float(), max_iter=5, tol=0, seed=0)
        assert m.dtype == torch.float32 and all(np.isfinite(hist.log_likelihood))


# ---------------------------------------------------------------------- what setters accept
def test_setters_accept_valid_values_and_round_off():
    m = GaussianMixture(2, 2).double()
    m.weights = [0.3, 0.7 + 1e-9]  # within the tolerance: renormalised
    assert abs(float(m.weights.detach().sum()) - 1) < 1e-12
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    noisy = cov.clone()
    noisy[0, 1] += 1e-12  # rounding-level asymmetry: accepted, symmetrised
    m.covariances = torch.stack([noisy, cov])
    assert torch.allclose(m.covariances, torch.stack([cov, cov]), atol=1e-11)
    m.means = np.array([[1, 2], [3, 4]])  # integers are numbers
    assert m.means.dtype == F64
    h = GaussianHMM(2, 2, params="mc").double()
    h.trans_probs = [[1.0, 0.0], [0.5, 0.5]]  # structural zeros are fine
    assert float(h.trans_probs.detach()[0, 1]) == 0.0


# ---------------------------------------------------------------------- missing values
def masked_user_model(data, mask):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=F64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0], dtype=F64))
    with pyro.plate("data", data.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=data, obs_mask=mask)


def test_values_that_obs_mask_marks_missing_may_be_anything():
    y = _with(Y, 3, NAN)
    mask = ~y.isnan()
    EM(masked_user_model).step(y.nan_to_num(), mask)  # the hint of the error message
    with pyro.validation_enabled(False):  # Pyro's own check off: NaN itself, masked
        EM(masked_user_model).step(y, mask)
    assert torch.isfinite(pyro.param("locs")).all()
    before = state_of("user")
    with pytest.raises(ValueError, match=r"site 'x_observed'.*inf at index \(5,\)"):
        EM(masked_user_model).step(_with(y, 5, INF).nan_to_num(nan=0.0, posinf=INF), mask)
    assert bitwise_equal(before, state_of("user"))

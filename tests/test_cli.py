"""The command line on real files: the bundled Old Faithful data as CSV and NPY, and
malformed files that must give one clear error line and exit status 2."""

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from pyroem.cli import main
from pyroem.datasets import load_old_faithful
from pyroem.models import GaussianHMM, GaussianMixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def faithful_csv(tmp_path):
    """The bundled CSV as shipped: comment lines, a header row, 272 rows of 2 numbers."""
    path = tmp_path / "faithful.csv"
    with resources.as_file(resources.files("pyroem").joinpath("data/old_faithful.csv")) as src:
        shutil.copy(src, path)
    return path


@pytest.fixture
def faithful_npy(tmp_path):
    path = tmp_path / "faithful.npy"
    np.save(path, load_old_faithful().numpy())
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyroem: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


def test_fit_csv_matches_the_api_and_score_matches_log_prob(capsys, tmp_path, faithful_csv):
    params = tmp_path / "gmm.npz"
    code, out, _ = run(capsys, "fit", "gmm", faithful_csv, "--components", 2, "--max-iter", 3,
                       "--seed", 3, "--quiet", "--output", params)
    assert code == 0 and "3 iterations" in out
    # the same fit through the Python API
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2, "full")
    gmm.fit(x, max_iter=3, tol=1e-6, seed=3)
    with np.load(params) as saved:
        assert str(saved["family"]) == "gmm" and str(saved["covariance_type"]) == "full"
        np.testing.assert_allclose(saved["weights"], gmm.weights.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(saved["means"], gmm.means.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(saved["covariances"], gmm.covariances.numpy(), atol=1e-10)
    # score writes one log-likelihood per row, to stdout
    code, out, _ = run(capsys, "score", "gmm", params, faithful_csv)
    assert code == 0
    scores = np.loadtxt(out.splitlines())
    np.testing.assert_allclose(scores, gmm.log_prob(x).numpy(), rtol=1e-9)


def test_fit_npy_to_json_with_plot_then_score_to_file(capsys, tmp_path, faithful_npy):
    params, png, scores = tmp_path / "p.json", tmp_path / "fit.png", tmp_path / "s.npy"
    code, out, _ = run(capsys, "fit", "gmm", faithful_npy, "-k", 3, "--covariance-type", "diag",
                       "--method", "viterbi", "--max-iter", 2, "--quiet", "-o", params,
                       "--plot", png)
    assert code == 0, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(params.read_text())
    assert saved["covariance_type"] == "diag"
    assert np.shape(saved["covariances"]) == (3, 2)
    gmm = GaussianMixture(3, 2, "diag").to(torch.float64)
    gmm.weights = torch.tensor(saved["weights"], dtype=torch.float64)
    gmm.means = torch.tensor(saved["means"], dtype=torch.float64)
    gmm.covariances = torch.tensor(saved["covariances"], dtype=torch.float64)
    code, out, _ = run(capsys, "score", "gmm", params, faithful_npy, "--output", scores)
    assert code == 0 and out == ""
    np.testing.assert_allclose(np.load(scores), gmm.log_prob(load_old_faithful()).numpy(),
                               rtol=1e-9)


def test_fit_svi_runs(capsys, tmp_path, faithful_npy):
    code, out, _ = run(capsys, "fit", "gmm", faithful_npy, "--method", "svi", "--max-iter", 2,
                       "--quiet")
    assert code == 0 and "fitted by svi: 2 iterations" in out


def test_sample_is_seeded_and_follows_the_parameters(capsys, tmp_path):
    params = tmp_path / "p.npz"
    means = np.array([[0.0, 0.0], [10.0, -10.0]])
    np.savez(params, family="gmm", covariance_type="spherical", reg_covar=1e-6,
             weights=np.array([0.25, 0.75]), means=means, covariances=np.array([1.0, 4.0]))
    code, out, _ = run(capsys, "sample", "gmm", params, 4000, "--seed", 1)
    assert code == 0
    x = np.loadtxt(out.splitlines(), delimiter=",")
    assert x.shape == (4000, 2)
    assert run(capsys, "sample", "gmm", params, 4000, "--seed", 1)[1] == out
    # the sample mean of a mixture is sum_k w_k mu_k (standard error < 0.1 here)
    np.testing.assert_allclose(x.mean(0), 0.25 * means[0] + 0.75 * means[1], atol=0.5)
    csv_out = tmp_path / "x.csv"
    assert run(capsys, "sample", "gmm", params, 5, "-o", csv_out)[0] == 0
    assert np.loadtxt(csv_out, delimiter=",").shape == (5, 2)


def test_help_and_demo_parser(capsys):
    code, out, _ = run(capsys, "fit", "gmm", "--help")
    assert code == 0 and "--covariance-type" in out and "--method" in out
    code, out, _ = run(capsys, "demo", "--help")
    assert code == 0 and "--quiet" in out


def test_version(capsys):
    import pyroem
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith(f"pyroem {pyroem.__version__} ")


@pytest.mark.parametrize("content, words", [
    ("1,2\n3,4\n5\n", ["line 3", "expected 2 values, got 1"]),        # ragged
    ("a,b\n1,2\nx,4\n", ["line 3", "'x' is not a number"]),             # text after the header
    ("1,2\nnan,4\n3,4\n", ["NaN or inf", "row 2, column 1"]),          # NaN
    ("1,2\n3,inf\n5,6\n", ["NaN or inf", "row 2, column 2"]),          # inf
    ("# only a comment\n", ["no data rows"]),                           # empty
    ("1,2\n3,4\n5,6\n", ["at least num_components=5 points"]),          # too few points
])
def test_malformed_csv(capsys, tmp_path, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, _, err = run(capsys, "fit", "gmm", path, "-k", 5 if "5,6" in content else 2, "-q")
    assert_one_line_error(code, err, *words)


def test_binary_file_given_as_csv(capsys, tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(bytes(range(256)) * 4)
    code, _, err = run(capsys, "fit", "gmm", path, "-q")
    assert_one_line_error(code, err, "not a text (CSV) file")


def test_malformed_npy(capsys, tmp_path):
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[1.0, 2.0], [np.nan, 1.0], [0.0, 0.0]]))
    assert_one_line_error(*run(capsys, "fit", "gmm", nan, "-q")[::2], "NaN or inf", "row 2")
    cube = tmp_path / "cube.npy"
    np.save(cube, np.zeros((4, 3, 2)))
    assert_one_line_error(*run(capsys, "fit", "gmm", cube, "-q")[::2], "1-D or 2-D",
                          "(4, 3, 2)")
    text = tmp_path / "text.npy"
    np.save(text, np.array(["a", "b"]))
    assert_one_line_error(*run(capsys, "fit", "gmm", text, "-q")[::2], "numeric")
    junk = tmp_path / "junk.npy"
    junk.write_text("not numpy")
    assert_one_line_error(*run(capsys, "fit", "gmm", junk, "-q")[::2], "not a readable .npy")


def test_wrong_dims_missing_files_and_bad_params(capsys, tmp_path, faithful_npy):
    params = tmp_path / "p.npz"
    assert run(capsys, "fit", "gmm", faithful_npy, "--max-iter", 2, "-q", "-o", params)[0] == 0
    three = tmp_path / "three.npy"
    np.save(three, np.zeros((10, 3)))
    assert_one_line_error(*run(capsys, "score", "gmm", params, three)[::2], "(N, 2)", "(10, 3)")
    assert_one_line_error(*run(capsys, "fit", "gmm", three, "-q", "--plot", tmp_path / "f.png")
                          [::2], "--plot needs 2-D data")
    assert_one_line_error(*run(capsys, "fit", "gmm", tmp_path / "missing.csv")[::2],
                          "missing.csv: no such file")
    assert_one_line_error(*run(capsys, "score", "gmm", tmp_path / "none.npz", faithful_npy)
                          [::2], "no such file")
    assert_one_line_error(*run(capsys, "score", "gmm", faithful_npy, faithful_npy)[::2],
                          "must end in .npz or .json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"family": "gmm", "weights": [1.0]}))
    assert_one_line_error(*run(capsys, "sample", "gmm", wrong, 3)[::2], "no 'means'")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"family": "hmm"}))
    assert_one_line_error(*run(capsys, "sample", "gmm", other, 3)[::2], "hmm parameters")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_one_line_error(*run(capsys, "sample", "gmm", broken, 3)[::2],
                          "not a readable parameter file")


@pytest.mark.parametrize("argv, words", [
    (["fit", "gmm", "DATA", "--no-such-option"], ["unrecognized arguments: --no-such-option"]),
    (["fit", "nope", "DATA"], ["invalid choice: 'nope'"]),
    (["fit", "gmm", "DATA", "--method", "gibbs"], ["invalid choice: 'gibbs'"]),
    (["fit", "gmm", "DATA", "--covariance-type", "banana"], ["invalid choice: 'banana'"]),
    (["fit", "gmm", "DATA", "--max-iter", "0"], ["--max-iter", ">= 1"]),
    (["fit", "gmm", "DATA", "--tol", "x"], ["--tol", "expected a number"]),
    (["fit", "gmm", "DATA", "-k", "0", "-q"], ["num_components must be an integer >= 1"]),
    (["fit", "gmm", "DATA", "-q", "-o", "params.txt"], ["must end in .npz or .json"]),
    (["sample", "gmm", "P.npz", "-3"], []),
    ([], ["required"]),
])
def test_bad_options(capsys, faithful_npy, argv, words):
    argv = [str(faithful_npy) if a == "DATA" else a for a in argv]
    assert_one_line_error(*run(capsys, *argv)[::2], *words)


def test_python_dash_m_subprocess(tmp_path, faithful_csv):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    params = tmp_path / "p.json"
    ok = subprocess.run([sys.executable, "-m", "pyroem", "fit", "gmm", str(faithful_csv),
                         "--max-iter", "2", "--quiet", "-o", str(params)],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    assert "fitted by em: 2 iterations" in ok.stdout and params.is_file()
    assert "Traceback" not in ok.stderr


@pytest.fixture
def plda_csv(tmp_path):
    """Embeddings drawn from a known PLDA model, the speaker label in the first column."""
    from pyroem.models import PLDA

    truth = PLDA(3).double()
    truth.between_cov = 4 * torch.eye(3, dtype=torch.float64)
    truth.within_cov = torch.eye(3, dtype=torch.float64)
    x, labels, _ = truth.sample(30, 4, seed=0)
    path = tmp_path / "plda.csv"
    np.savetxt(path, np.column_stack([labels.numpy(), x.numpy()]), delimiter=",")
    return path, x, labels


def test_plda_fit_score_sample(capsys, tmp_path, plda_csv):
    from pyroem.models import PLDA

    path, x, labels = plda_csv
    params = tmp_path / "plda.npz"
    code, out, _ = run(capsys, "fit", "plda", path, "--quiet", "--output", params)
    assert code == 0 and "between_cov" in out
    api = PLDA(3)
    api.fit(x, labels, tol=1e-6, max_iter=200, seed=0)
    with np.load(params) as saved:
        np.testing.assert_allclose(saved["between_cov"], api.between_cov.numpy(), rtol=1e-8)
        np.testing.assert_allclose(saved["within_cov"], api.within_cov.numpy(), rtol=1e-8)
    code, out, _ = run(capsys, "score", "plda", params, path)
    assert code == 0
    rows = np.loadtxt(out.splitlines())  # one per row; a speaker's rows sum to log p(X_s)
    per_speaker = np.bincount(np.unique(labels.numpy(), return_inverse=True)[1], weights=rows)
    np.testing.assert_allclose(per_speaker, api.log_prob(x, labels).numpy(), rtol=1e-8)
    code, out, _ = run(capsys, "sample", "plda", params, 3, "--seed", 1)
    rows = np.loadtxt(out.splitlines(), delimiter=",")
    assert code == 0 and rows.shape == (15, 4) and set(rows[:, 0]) == {0, 1, 2}


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_plda_rank_fit_score_sample(capsys, tmp_path, plda_csv, suffix):
    """``--rank R`` fits the simplified PLDA as the API does; its checkpoint and its JSON
    parameter file both score and sample."""
    import pyroem
    from pyroem.models import PLDA
    from pyroem.models.plda import LowRankPLDA

    path, x, labels = plda_csv
    params = tmp_path / f"plda{suffix}"
    code, out, _ = run(capsys, "fit", "plda", path, "--rank", 2, "-q", "-o", params)
    assert code == 0 and "speaker subspace rank: 2" in out
    api = PLDA(3, rank=2)
    api.fit(x, labels, tol=1e-6, max_iter=200, seed=0)
    if suffix == ".npz":
        loaded = pyroem.load(params)
        assert isinstance(loaded, LowRankPLDA) and loaded.rank == 2
        torch.testing.assert_close(loaded.speaker_loadings, api.speaker_loadings)
    code, out, _ = run(capsys, "score", "plda", params, path)
    rows = np.loadtxt(out.splitlines())
    per_speaker = np.bincount(np.unique(labels.numpy(), return_inverse=True)[1], weights=rows)
    np.testing.assert_allclose(per_speaker, api.log_prob(x, labels).numpy(), rtol=1e-8)
    code, out, _ = run(capsys, "sample", "plda", params, 2, "--seed", 1)
    assert code == 0 and np.loadtxt(out.splitlines(), delimiter=",").shape == (10, 4)


@pytest.mark.parametrize("rank", [0, 4])
def test_plda_rank_out_of_range(capsys, plda_csv, rank):
    code, _, err = run(capsys, "fit", "plda", plda_csv[0], "--rank", rank)
    assert_one_line_error(code, err, "--rank must be between 1 and the embedding dimension 3")


def test_plda_needs_a_label_column(capsys, tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("1\n2\n3\n")
    code, _, err = run(capsys, "fit", "plda", path)
    assert_one_line_error(code, err, "label column")


# ---------------------------------------------------------------------------- hmm
DURATION_LENGTHS = [100, 90, 82]


@pytest.fixture
def durations_csv(tmp_path):
    """Old Faithful eruption durations in time order, one per row, with a header."""
    path = tmp_path / "durations.csv"
    np.savetxt(path, load_old_faithful().numpy()[:, 0], header="eruptions", comments="")
    return path


def _hmm_from_saved(saved):
    cov = saved["covariance_type"]
    model = GaussianHMM(len(saved["means"]), np.shape(saved["means"])[1], str(cov)).double()
    model.start_probs = torch.as_tensor(np.asarray(saved["start_probs"], dtype=float))
    model.trans_probs = torch.as_tensor(np.asarray(saved["trans_probs"], dtype=float))
    model.means = torch.as_tensor(np.asarray(saved["means"], dtype=float))
    model.covariances = torch.as_tensor(np.asarray(saved["covariances"], dtype=float))
    return model


def test_hmm_fit_matches_the_api_and_score_is_per_sequence(capsys, tmp_path, durations_csv):
    params = tmp_path / "hmm.npz"
    code, out, _ = run(capsys, "fit", "hmm", durations_csv, "--states", 2, "--max-iter", 4,
                       "--seed", 2, "-q", "-o", params)
    assert code == 0 and "hmm fitted by em: 4 iterations" in out and "trans_probs[1]" in out
    x = load_old_faithful()[:, :1]
    hmm = GaussianHMM(2, 1, "full")
    hmm.fit(x, max_iter=4, tol=1e-6, seed=2)
    with np.load(params) as saved:
        assert str(saved["family"]) == "hmm"
        for name in ("start_probs", "trans_probs", "means"):
            np.testing.assert_allclose(saved[name], getattr(hmm, name).detach().numpy(),
                                       atol=1e-12)
        np.testing.assert_allclose(saved["covariances"], hmm.covariances.numpy(), atol=1e-10)
    # one sequence: one score, log p(x_1:T)
    code, out, _ = run(capsys, "score", "hmm", params, durations_csv)
    assert code == 0
    np.testing.assert_allclose(np.loadtxt(out.splitlines()), hmm.log_prob(x).item(), rtol=1e-9)
    # three sequences (--lengths): three scores, those of the pieces
    lengths = tmp_path / "lengths.csv"
    np.savetxt(lengths, DURATION_LENGTHS, fmt="%d")
    code, out, _ = run(capsys, "score", "hmm", params, durations_csv, "--lengths", lengths)
    assert code == 0
    pieces = list(torch.split(x, DURATION_LENGTHS))
    np.testing.assert_allclose(np.loadtxt(out.splitlines()), hmm.log_prob(pieces).numpy(),
                               rtol=1e-9)


def test_hmm_ids_column_equals_lengths_file_json_and_plot(capsys, tmp_path, durations_csv):
    x = load_old_faithful().numpy()[:, 0]
    ids = np.repeat([5, 1, 5], DURATION_LENGTHS)  # runs of equal ids; an id may recur
    with_ids = tmp_path / "ids.npy"
    np.save(with_ids, np.column_stack([ids, x]))
    lengths = tmp_path / "lengths.npy"
    np.save(lengths, np.array(DURATION_LENGTHS))
    p1, p2, png = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "fit.png"
    code, out, _ = run(capsys, "fit", "hmm", with_ids, "--ids", "-k", 3, "--covariance-type",
                       "diag", "--method", "viterbi", "--max-iter", 5, "-q", "-o", p1,
                       "--plot", png)
    assert code == 0, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, _ = run(capsys, "fit", "hmm", durations_csv, "--lengths", lengths, "-k", 3,
                     "--covariance-type", "diag", "--method", "viterbi", "--max-iter", 5, "-q",
                     "-o", p2)
    assert code == 0
    a, b = json.loads(p1.read_text()), json.loads(p2.read_text())
    assert a == b and a["covariance_type"] == "diag" and np.shape(a["covariances"]) == (3, 1)
    # Viterbi training: the transitions are counts of the decoded path, rows sum to one
    np.testing.assert_allclose(np.sum(a["trans_probs"], 1), 1.0)
    model = _hmm_from_saved(a)
    code, out, _ = run(capsys, "score", "hmm", p1, with_ids, "--ids")
    pieces = list(torch.split(torch.as_tensor(x).unsqueeze(-1), DURATION_LENGTHS))
    np.testing.assert_allclose(np.loadtxt(out.splitlines()), model.log_prob(pieces).numpy(),
                               rtol=1e-9)


def test_hmm_sample_is_seeded_and_follows_the_chain(capsys, tmp_path):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({
        "family": "hmm", "covariance_type": "spherical",
        "start_probs": [1.0, 0.0], "trans_probs": [[0.0, 1.0], [1.0, 0.0]],
        "means": [[-10.0, 0.0], [10.0, 0.0]], "covariances": [1.0, 1.0]}))
    code, out, _ = run(capsys, "sample", "hmm", params, 50, "--seed", 3)
    assert code == 0
    x = np.loadtxt(out.splitlines(), delimiter=",")
    assert x.shape == (50, 2)
    assert run(capsys, "sample", "hmm", params, 50, "--seed", 3)[1] == out
    # the chain starts in state 0 and alternates: the first column alternates in sign
    np.testing.assert_array_equal(np.sign(x[:, 0]), np.tile([-1.0, 1.0], 25))


def test_hmm_svi_runs(capsys, durations_csv):
    code, out, _ = run(capsys, "fit", "hmm", durations_csv, "--method", "svi", "--max-iter", 2,
                       "-q")
    assert code == 0 and "fitted by svi: 2 iterations" in out


@pytest.mark.parametrize("data, lengths, extra, words", [
    ("1\n2\n3\n", "1\n1\n", [], ["lengths sum to 2", "has 3 rows"]),
    ("1\n2\n3\n", "1.5\n1.5\n", [], ["integers >= 1"]),
    ("1\n2\n3\n", "3\n0\n", [], ["integers >= 1"]),
    ("1\n2\n3\n", None, ["--ids"], ["id column"]),
    ("1\n2\n", None, ["-k", 3], ["at least num_states=3 frames"]),
    ("1\nnan\n3\n", None, [], ["NaN or inf", "row 2"]),
    ("1,2\n3\n", None, [], ["line 2", "expected 2 values, got 1"]),
])
def test_hmm_malformed_inputs(capsys, tmp_path, data, lengths, extra, words):
    path = tmp_path / "x.csv"
    path.write_text(data)
    argv = ["fit", "hmm", path, "-q", *extra]
    if lengths is not None:
        (tmp_path / "len.csv").write_text(lengths)
        argv += ["--lengths", tmp_path / "len.csv"]
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, *words)


def test_hmm_bad_params_and_options(capsys, tmp_path, durations_csv):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"family": "hmm", "start_probs": [0.5, 0.5],
                               "trans_probs": [[0.5, 0.6], [0.5, 0.5]], "means": [[0.0], [1.0]],
                               "covariances": [[[1.0]], [[1.0]]]}))
    assert_one_line_error(*run(capsys, "score", "hmm", bad, durations_csv)[::2],
                          "trans_probs", "sum to 1")
    bad.write_text(json.dumps({"family": "hmm", "start_probs": [1.0]}))
    assert_one_line_error(*run(capsys, "score", "hmm", bad, durations_csv)[::2], "no 'trans_probs'")
    gmm = tmp_path / "gmm.json"
    gmm.write_text(json.dumps({"family": "gmm"}))
    assert_one_line_error(*run(capsys, "score", "hmm", gmm, durations_csv)[::2],
                          "holds gmm parameters")
    assert_one_line_error(*run(capsys, "fit", "hmm", durations_csv, "--states", 0, "-q")[::2],
                          "num_states")
    assert_one_line_error(*run(capsys, "fit", "hmm", durations_csv, "--covariance-type", "x")[::2],
                          "--covariance-type")
    lengths = tmp_path / "l.csv"
    lengths.write_text("272\n")
    assert_one_line_error(*run(capsys, "fit", "hmm", durations_csv, "--ids", "--lengths",
                               lengths)[::2], "not allowed")

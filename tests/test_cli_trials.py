"""``pyroem score plda``: one number per row (chain rule), and trial lists (Kaldi's format)
scored as the API scores them, with s-norm against a cohort."""

import numpy as np
import pytest
import torch

import pyroem
from pyroem.calibration import snorm
from pyroem.cli import main
from pyroem.models import PLDA


def write_rows(path, names, x):
    with open(path, "w") as f:
        f.writelines(name + "," + ",".join(repr(float(v)) for v in row) + "\n" for name, row in zip(names, x))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("trials")
    truth = PLDA(3).to(torch.float64)
    x, labels, _ = truth.sample(8, 4, seed=0)
    names = [f"spk{int(s)}" for s in labels]
    write_rows(d / "train.csv", names, x)
    assert main(["fit", "plda", str(d / "train.csv"), "-o", str(d / "plda.npz"), "-q"]) == 0
    x_eval, y_eval, _ = truth.sample(5, 4, seed=1)
    enroll_rows = [(f"model{int(s)}", v) for s, v in zip(y_eval, x_eval)][::2]
    test_rows = [(f"utt{i}", v) for i, v in enumerate(x_eval)][1::2]
    write_rows(d / "enroll.csv", [n for n, _ in enroll_rows], [v for _, v in enroll_rows])
    write_rows(d / "test.csv", [n for n, _ in test_rows], [v for _, v in test_rows])
    speaker_of = {f"utt{i}": int(s) for i, s in enumerate(y_eval)}
    lines = [f"model{s} {t} {'target' if speaker_of[t] == s else 'nontarget'}"
             for s in range(5) for t, _ in test_rows]
    (d / "trials.txt").write_text("\n".join(lines) + "\n")
    cohort, _, _ = truth.sample(12, 1, seed=2)
    write_rows(d / "cohort.csv", [f"c{i}" for i in range(len(cohort))], cohort)
    return d, x, names, {"enroll_rows": enroll_rows, "test_rows": test_rows, "cohort": cohort}


def read_scores(text):
    return [(e, t, float(s)) for e, t, s in (line.split() for line in text.splitlines())]


def test_per_row_scores_add_up_to_each_speakers_log_likelihood(setup, capsys):
    d, x, names, _ = setup
    assert main(["score", "plda", str(d / "plda.npz"), str(d / "train.csv")]) == 0
    rows = np.array([float(v) for v in capsys.readouterr().out.split()])
    assert rows.shape == (len(x),)
    model = pyroem.load(d / "plda.npz")
    per_speaker = model.log_prob(x, names)  # sorted speaker names
    speakers = sorted(set(names))
    sums = [rows[[n == s for n in names]].sum() for s in speakers]
    assert np.allclose(sums, per_speaker.numpy(), rtol=1e-9, atol=1e-9)
    # a speaker's first row is its embedding's marginal log-likelihood alone
    first = names.index(speakers[0])
    alone = float(model.log_prob(x[first:first + 1], [0]))
    assert rows[first] == pytest.approx(alone, abs=1e-8)  # printed to 9 decimals


def test_trial_scores_are_the_api_llrs_and_the_summary_is_printed(setup, capsys):
    d, _, _, data = setup
    model = pyroem.load(d / "plda.npz")
    assert main(["score", "plda", str(d / "plda.npz"), str(d / "test.csv"),
                 "--enroll", str(d / "enroll.csv"), "--trials", str(d / "trials.txt")]) == 0
    out, err = capsys.readouterr()
    scores = read_scores(out)
    assert [f"{e} {t}" for e, t, _ in scores] == \
        [" ".join(line.split()[:2]) for line in (d / "trials.txt").read_text().splitlines()]
    enroll = {}
    for name, v in data["enroll_rows"]:
        enroll.setdefault(name, []).append(v)
    tests = dict(data["test_rows"])
    for e, t, s in scores:
        assert s == pytest.approx(float(model.llr(torch.stack(enroll[e]), tests[t])), abs=2e-6)
    assert "target" in err and "EER" in err and "Cllr" in err and "actDCF" in err


def test_cohort_snorm_matches_the_api(setup, capsys):
    d, _, _, data = setup
    model = pyroem.load(d / "plda.npz")
    assert main(["score", "plda", str(d / "plda.npz"), str(d / "test.csv"), "--enroll",
                 str(d / "enroll.csv"), "--trials", str(d / "trials.txt"), "--cohort",
                 str(d / "cohort.csv"), "--top-k", "5"]) == 0
    scores = read_scores(capsys.readouterr().out)
    enroll = {}
    for name, v in data["enroll_rows"]:
        enroll.setdefault(name, []).append(v)
    e_names = sorted(enroll)
    t_names = [n for n, _ in data["test_rows"]]
    tests = torch.stack([v for _, v in data["test_rows"]])
    e_sets = [torch.stack(enroll[e]) for e in e_names]
    cohort = data["cohort"]
    raw = model.score_matrix(e_sets, tests)
    want = snorm(raw, model.score_matrix(e_sets, cohort),
                 model.score_matrix([c[None] for c in cohort], tests).T, top_k=5)
    for e, t, s in scores:
        assert s == pytest.approx(float(want[e_names.index(e), t_names.index(t)]), abs=2e-6)


@pytest.mark.parametrize("trials, extra, words", [
    ("model0 utt1 maybe\n", [], "line 1: expected 'ENROLL_ID TEST_ID"),
    ("model0 nobody target\n", [], "no row with the test id 'nobody'"),
    ("ghost utt1\n", [], "no row with the enrolment id 'ghost'"),
    ("model0 utt1 target\nmodel1 utt1\n", [], "some trials have a key"),
    ("model0 utt1\n", ["--top-k", "3"], "--top-k needs --cohort"),
])
def test_trial_list_errors(setup, capsys, tmp_path, trials, extra, words):
    d = setup[0]
    (tmp_path / "t.txt").write_text(trials)
    code = main(["score", "plda", str(d / "plda.npz"), str(d / "test.csv"), "--enroll",
                 str(d / "enroll.csv"), "--trials", str(tmp_path / "t.txt"), *extra])
    out, err = capsys.readouterr()
    assert code == 2 and not out and words in err


def test_a_test_id_must_name_one_row(setup, capsys):
    d = setup[0]
    (d / "t2.txt").write_text("model0 model1\n")  # model1 names several enrolment rows
    code = main(["score", "plda", str(d / "plda.npz"), str(d / "enroll.csv"),
                 "--trials", str(d / "t2.txt")])
    assert code == 2 and "must name exactly one embedding" in capsys.readouterr().err

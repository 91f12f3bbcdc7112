import math

import numpy as np
import pytest
import torch

from pyroem.metrics import det_curve, eer, min_dcf, plot_det

# Operating points by hand for targets [1, 3, 4, 5] and non-targets [0, 2, 3.5]:
#   threshold  0    1    2    3    3.5  4    5    inf
#   p_miss     0    0    1/4  1/4  1/2  1/2  3/4  1
#   p_fa       1    2/3  2/3  1/3  1/3  0    0    0
TAR = [1.0, 3.0, 4.0, 5.0]
NON = [0.0, 2.0, 3.5]


def test_det_curve_by_hand():
    p_fa, p_miss, thresholds = det_curve(TAR, NON)
    assert np.allclose(thresholds, [0, 1, 2, 3, 3.5, 4, 5, np.inf])
    assert np.allclose(p_miss, [0, 0, 1 / 4, 1 / 4, 1 / 2, 1 / 2, 3 / 4, 1])
    assert np.allclose(p_fa, [1, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])


def test_eer_by_hand():
    # the crossing lies on the segment from (1/3, 1/4) to (1/3, 1/2): p_fa = 1/3 there
    assert math.isclose(eer(TAR, NON), 1 / 3)
    # an operating point on the diagonal: targets [3, 4, 5], non-targets [1, 2, 3.5]
    # give (p_fa, p_miss) = (1/3, 1/3) at threshold 3.5
    assert math.isclose(eer([3.0, 4.0, 5.0], [1.0, 2.0, 3.5]), 1 / 3)
    # separable scores: zero error; reversed scores: all wrong
    assert eer([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert eer([0.0, 1.0], [2.0, 3.0]) == 1.0
    # a target tied with a non-target: tar [1, 2], non [1, 0] give (p_fa, p_miss) =
    # (1, 0), (1/2, 0), (0, 1/2), (0, 1); the crossing is mid-segment: EER 1/4
    assert math.isclose(eer(torch.tensor([1.0, 2.0]), np.array([1.0, 0.0])), 1 / 4)


def test_min_dcf_by_hand():
    # normalised costs per operating point (see the table above)
    # p_target=0.5:  p_miss + p_fa                     -> min 1/2 at threshold 4
    assert math.isclose(min_dcf(TAR, NON, p_target=0.5), 0.5)
    # p_target=0.9:  (0.9 p_miss + 0.1 p_fa) / 0.1     -> min 2/3 at threshold 1
    assert math.isclose(min_dcf(TAR, NON, p_target=0.9), 2 / 3)
    # p_target=0.01: (0.01 p_miss + 0.99 p_fa) / 0.01  -> min 1/2 at threshold 4
    assert math.isclose(min_dcf(TAR, NON, p_target=0.01), 0.5)
    assert math.isclose(min_dcf(TAR, NON, p_target=0.001), 0.5)
    # c_miss=2, p_target=0.5: (p_miss + 0.5 p_fa) / 0.5 -> min 2/3 at threshold 1
    assert math.isclose(min_dcf(TAR, NON, p_target=0.5, c_miss=2.0), 2 / 3)


def test_det_curve_agrees_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    tar = np.round(rng.normal(1.0, 1.0, 200), 1)  # rounding makes ties
    non = np.round(rng.normal(-1.0, 1.0, 300), 1)
    scores = np.concatenate([tar, non])
    y = np.concatenate([np.ones_like(tar), np.zeros_like(non)])
    fpr, fnr, thr = sklearn_metrics.det_curve(y, scores)
    p_fa, p_miss, thresholds = det_curve(tar, non)
    index = np.searchsorted(thresholds, thr)
    assert np.allclose(thresholds[index], thr)
    assert np.allclose(p_fa[index], fpr) and np.allclose(p_miss[index], fnr)


def test_plot_det_writes_a_file(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "det.png"
    ax = plot_det(rng.normal(2, 1, 100), rng.normal(0, 1, 100), path=path, label="toy")
    assert path.exists() and path.stat().st_size > 1000
    assert "EER" in ax.get_legend().get_texts()[0].get_text()
    assert ax.get_title() and "probability (%)" in ax.get_xlabel()
    assert plot_det([2.0, 3.0], [0.0, 2.5], ax=ax, title="mine").get_title() == "mine"


def test_bad_inputs():
    with pytest.raises(ValueError):
        eer([], [1.0])
    with pytest.raises(ValueError):
        eer([float("nan")], [1.0])
    with pytest.raises(ValueError):
        min_dcf([1.0], [0.0], p_target=0.0)
    with pytest.raises(ValueError):
        min_dcf([1.0], [0.0], c_fa=-1)
    with pytest.raises(ValueError):
        plot_det([1.0], [0.0], limits=(0.5, 0.1))

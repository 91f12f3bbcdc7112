"""Checkpoints: configuration + model parameters, exact round trips, no training data,
clear refusals."""

import json

import numpy as np
import pytest
import torch

import pyroem
from pyroem.datasets import load_old_faithful
from pyroem.models import GMMHMM, PLDA, CategoricalHMM, GaussianHMM, GaussianMixture
from pyroem.models.checkpoint import VERSION


def _model_tensors(model):
    return {k: v for k, v in model.state_dict().items()
            if torch.is_tensor(v) and not k.rsplit(".", 1)[-1].startswith("q_")}


def _fitted(index):
    x = load_old_faithful()
    g = torch.Generator().manual_seed(0)
    cases = [
        (lambda: GaussianMixture(3, 2, covariance_type="tied", reg_covar=1e-4), (x,)),
        (lambda: GaussianHMM(2, 2, covariance_type="diag", final_states=[0],
                             trans_concentration=1.5), (x,)),
        (lambda: GMMHMM(2, 2, dim=2, covariance_type="spherical"), (x.float(),)),
        (lambda: CategoricalHMM(3, 5, params="te"), (torch.randint(5, (80,), generator=g),)),
        (lambda: PLDA(2, reg_covar=1e-5), (x, torch.arange(272) % 9)),
    ]
    make, data = cases[index]
    model = make()
    model.fit(*data, max_iter=3, tol=0, seed=0)
    return model, data


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
@pytest.mark.parametrize("index", range(5))
def test_round_trip_is_exact(tmp_path, index, suffix):
    model, data = _fitted(index)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    for loaded in (pyroem.load(path), type(model).load(path)):
        assert type(loaded) is type(model)
        a, b = _model_tensors(model), _model_tensors(loaded)
        assert a.keys() == b.keys()
        assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
        for k, v in model.config().items():
            w = loaded.config()[k]
            assert (torch.equal(v, w) and v.dtype == w.dtype) if torch.is_tensor(v) else v == w
        assert torch.equal(loaded.log_prob(*data), model.log_prob(*data))


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_checkpoint_holds_no_training_data(tmp_path, suffix):
    small, large = GaussianMixture(2, 2), GaussianMixture(2, 2)
    g = torch.Generator().manual_seed(1)
    small.fit(torch.randn(50, 2, generator=g, dtype=torch.float64), max_iter=2, tol=0, seed=0)
    large.fit(torch.randn(5000, 2, generator=g, dtype=torch.float64), max_iter=2, tol=0, seed=0)
    assert small.q_probs.shape == (50, 2) and large.q_probs.shape == (5000, 2)
    small.save(tmp_path / f"s{suffix}")
    large.save(tmp_path / f"l{suffix}")
    sizes = [(tmp_path / f"{n}{suffix}").stat().st_size for n in "sl"]
    assert sizes[0] == sizes[1]
    assert not hasattr(pyroem.load(tmp_path / f"l{suffix}"), "q_probs")


def test_refusals(tmp_path):
    model, _ = _fitted(0)
    model.save(tmp_path / "gmm.pt")
    with pytest.raises(ValueError, match="holds a GaussianMixture checkpoint, not a PLDA"):
        PLDA.load(tmp_path / "gmm.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    for name in ("junk.pt", "tensor.pt", "plain.npz"):
        with pytest.raises(ValueError, match="not a pyroem checkpoint"):
            pyroem.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        pyroem.load(tmp_path / "missing.pt")


def test_no_code_runs_while_loading(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": "pyroem", "version": 1, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a pyroem checkpoint"):
        pyroem.load(tmp_path / "evil.pt")


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_newer_format_is_refused(tmp_path, suffix):
    model, _ = _fitted(0)
    path = tmp_path / f"m{suffix}"
    model.save(path)
    if suffix == ".pt":
        ckpt = torch.load(path, weights_only=True)
        ckpt["version"] = VERSION + 1
        torch.save(ckpt, path)
    else:
        with np.load(path) as data:
            arrays = dict(data)
        header = json.loads(str(arrays["__header__"]))
        header["version"] = VERSION + 1
        arrays["__header__"] = np.array(json.dumps(header))
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match="newer pyroem"):
        pyroem.load(path)


def test_cli_parameter_archive_is_a_checkpoint(tmp_path, capsys):
    from pyroem.cli import main

    x = load_old_faithful()
    np.savetxt(tmp_path / "x.csv", x.numpy(), delimiter=",")
    out = tmp_path / "gmm.npz"
    assert main(["fit", "gmm", str(tmp_path / "x.csv"), "-k", "2", "--max-iter", "3",
                 "--seed", "3", "--quiet", "-o", str(out)]) == 0
    loaded = pyroem.load(out)
    api = GaussianMixture(2, 2)
    api.fit(x, max_iter=3, tol=1e-6, seed=3)
    assert isinstance(loaded, GaussianMixture)
    torch.testing.assert_close(loaded.log_prob(x), api.log_prob(x), rtol=0, atol=1e-10)
    with np.load(out) as saved:  # still readable with numpy alone
        np.testing.assert_allclose(saved["means"], loaded.means.detach().numpy(), atol=0)
        plain = {k: saved[k] for k in saved.files if ":" not in k and not k.startswith("__")}
    np.savez(tmp_path / "plain.npz", **plain)  # an archive of the arrays alone still scores
    capsys.readouterr()
    for params in (out, tmp_path / "plain.npz"):
        assert main(["score", "gmm", str(params), str(tmp_path / "x.csv")]) == 0
        scores = np.loadtxt(capsys.readouterr().out.splitlines())
        np.testing.assert_allclose(scores, loaded.log_prob(x).numpy(), rtol=1e-9)  # printed %.10g

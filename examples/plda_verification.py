"""Speaker verification with PLDA on real speech: the Japanese Vowels data set.

Nine male speakers say the Japanese vowel /ae/; each utterance is a sequence of 7-29
frames of 12 LPC cepstral coefficients (Kudo, Toyama and Shimbo, 1999; UCI). The data
ships inside the ``sktime`` wheel (``sktime/datasets/data/JapaneseVowels/*.ts``), so it
installs from PyPI and loads offline::

    pip install sktime
    python examples/plda_verification.py [--det det.png]

Only the data file is read (by :func:`pyroem.datasets.load_japanese_vowels`); sktime
itself is not imported.

Protocol:

* an utterance's embedding is the mean and standard deviation of its frames (24 dims);
* the preprocessing pipeline (centring, LDA to 8 = speakers - 1 dims, length
  normalisation) and PLDA are fitted on the training partition only (30 utterances of
  each speaker, recorded first);
* the evaluation partition (24-88 utterances per speaker, recorded later) supplies
  enrolment and test: each speaker model is enrolled from ``n`` of its evaluation
  utterances, every other evaluation utterance is a trial against every model;
* reported: EER and normalised minDCF (p_target 0.01 and 0.001) of PLDA scoring against
  cosine scoring of the same embeddings.

The speakers in enrolment and test are those of the training data (a closed set of
nine), the only split this data set allows.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # run from a checkout

from pyroem.datasets import load_japanese_vowels
from pyroem.metrics import eer, min_dcf, plot_det
from pyroem.models import PLDA
from pyroem.preprocessing import LDA, Center, LengthNorm, Pipeline


def trials(x, labels, n_enroll, rng):
    """Enrol each speaker from ``n_enroll`` random utterances; the rest are tests."""
    enroll_sets, model_speakers, test_mask = [], [], np.ones(len(labels), bool)
    for speaker in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == speaker))[:n_enroll]
        enroll_sets.append(x[idx])
        model_speakers.append(speaker)
        test_mask[idx] = False
    target = np.array(model_speakers)[:, None] == labels[test_mask][None, :]
    return enroll_sets, x[test_mask], target


def cosine_scores(enroll_sets, tests):
    means = torch.stack([e.mean(0) for e in enroll_sets])
    means = means / means.norm(dim=-1, keepdim=True)
    return means @ (tests / tests.norm(dim=-1, keepdim=True)).T


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--det", help="write a DET plot to this file (e.g. det.png)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)

    try:
        x_train, train_labels, x_eval, eval_labels = load_japanese_vowels()
    except ImportError as e:
        raise SystemExit(str(e)) from None
    train_labels, eval_labels = train_labels.numpy(), eval_labels.numpy()
    print(f"Japanese Vowels: {len(train_labels)} training and {len(eval_labels)} evaluation "
          f"utterances of {len(np.unique(train_labels))} speakers, embeddings of dim "
          f"{x_train.shape[1]}")

    pipeline = Pipeline(Center(), LDA(8), LengthNorm()).fit(x_train, train_labels)
    y_train, y_eval = pipeline.transform(x_train), pipeline.transform(x_eval)
    plda = PLDA(y_train.shape[1])
    hist = plda.fit(y_train, train_labels, max_iter=200, tol=1e-6)
    print(f"PLDA fitted by EM: {hist.num_iters} iterations, log p(X) "
          f"{hist.log_likelihood[0]:.1f} -> {hist.final_log_likelihood:.1f}, "
          f"converged={hist.converged}\n")

    rng = np.random.default_rng(args.seed)
    print(f"{'n_enroll':>8} {'backend':>8} {'targets':>8} {'nontargets':>10} {'EER %':>7} "
          f"{'minDCF 0.01':>11} {'minDCF 0.001':>12}")
    det = []
    for n_enroll in (1, 3, 10):
        enroll_sets, tests, target = trials(y_eval, eval_labels, n_enroll, rng)
        for name, scores in (("PLDA", plda.score_matrix(enroll_sets, tests)),
                             ("cosine", cosine_scores(enroll_sets, tests))):
            tar, non = scores[torch.as_tensor(target)], scores[~torch.as_tensor(target)]
            print(f"{n_enroll:>8} {name:>8} {tar.numel():>8} {non.numel():>10} "
                  f"{100 * eer(tar, non):>7.2f} {min_dcf(tar, non, p_target=0.01):>11.3f} "
                  f"{min_dcf(tar, non, p_target=0.001):>12.3f}")
            det.append((f"{name}, n={n_enroll}", tar, non))
    if args.det:
        ax = None
        for label, tar, non in det:
            ax = plot_det(tar, non, ax=ax, label=label, limits=(0.002, 0.6))
        ax.figure.savefig(args.det, dpi=120, bbox_inches="tight")
        print(f"\nDET curves written to {args.det}")


if __name__ == "__main__":
    main()

"""Scores of a 2D model (SOFT_INTROVAE.md): 5,000 model and 5,000 data points binned into 100 x 100 histograms
on [-2r, 2r]^2, compared by KL and JSD, both as the Soft-IntroVAE authors compute them (to compare with their
table) and as the textbook defines them.

The authors' way works on the histograms normalised as densities (numpy's ``density=True``) and divides the
sum by the 100 rows (torch's ``kl_div`` with ``reduction="batchmean"``): KL = sum p (log p - log(q + 1e-14)) / 100
with p the data, q the model; their "JSD" is 1/2 [KL(M || p) + KL(M || q)] with M = (p + q) / 2 (the reverse
of the textbook's direction), each log taken of the value + 1e-14. The textbook way works on probability
masses P, Q (density times bin area): KL(P || Q) = sum P log(P / (Q + 1e-14)), and
JSD = 1/2 [KL(P || M) + KL(Q || M)] in nats, between 0 and log 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BINS = 100
EPS = 1e-14


def histogram(points: np.ndarray, r: float) -> np.ndarray:
    """The density histogram (BINS x BINS) of (n, 2) points on [-2r, 2r]^2; points outside are left out."""
    h, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=BINS, range=[[-2 * r, 2 * r], [-2 * r, 2 * r]],
                             density=True)
    return h


def _kl_sum(p: np.ndarray, log_q: np.ndarray) -> float:
    """sum p (log p - log_q), with 0 log 0 = 0 (as torch's kl_div)."""
    safe = np.where(p > 0, p, 1.0)
    return float(np.sum(np.where(p > 0, p * (np.log(safe) - log_q), 0.0)))


def scores(model_points: np.ndarray, data_points: np.ndarray, r: float) -> dict[str, float]:
    p, q = histogram(data_points, r), histogram(model_points, r)
    m = (p + q) / 2
    area = (4 * r / BINS) ** 2
    pm, qm, mm = p * area, q * area, m * area
    return {
        "kl": _kl_sum(p, np.log(q + EPS)) / BINS,
        "jsd": 0.5 * (_kl_sum(m, np.log(p + EPS)) + _kl_sum(m, np.log(q + EPS))) / BINS,
        "kl_textbook": _kl_sum(pm, np.log(qm + EPS)),
        "jsd_textbook": 0.5 * (_kl_sum(pm, np.log(mm + EPS)) + _kl_sum(qm, np.log(mm + EPS))),
    }


def format_scores(r: dict) -> str:
    """The scores of a 2D run (``scores.json``) as lines for a terminal (a third for the draws, if scored)."""
    text = (f"KL {r['kl']:.3f}  JSD {r['jsd']:.3f}  (the Soft-IntroVAE authors' way: densities / 100 rows)\n"
            f"KL {r['kl_textbook']:.3f}  JSD {r['jsd_textbook']:.4f}  (textbook, on probability masses, nats)")
    if "draws" in r:
        d = r["draws"]
        text += (f"\nover {d['n']} draws of samples and data: KL {d['kl'][0]:.3f} ± {d['kl'][1]:.3f}  "
                 f"JSD {d['jsd'][0]:.3f} ± {d['jsd'][1]:.3f}  (the authors' way; ± one draw's spread)")
    return text


def write_scores(folder: Path, result: dict) -> Path:
    """``folder/scores.json``: the scores and what they were measured with (training's and ``evaluate -o``'s)."""
    path = Path(folder) / "scores.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path

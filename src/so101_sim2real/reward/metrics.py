"""The scores of a reward classifier: pure functions of probabilities and labels, which training
(:mod:`~so101_sim2real.reward.classifier`, on the held-out episodes) and evaluation
(:mod:`~so101_sim2real.reward.evaluate`, on other recordings) both use."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class Metrics:
    """Scores of a classifier on labelled frames, at ``threshold`` (None where undefined)."""

    frames: int
    positives: int
    negatives: int
    threshold: float
    precision: float | None
    recall: float | None
    f1: float | None
    balanced_accuracy: float | None
    roc_auc: float | None
    confusion: dict[str, int]  # tp, fp, tn, fn
    target_precision: float
    threshold_at_target_precision: float | None  # the lowest threshold whose precision meets the target
    recall_at_target_precision: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count half), by the rank-sum formula."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(probs, kind="mergesort")
    sorted_p = np.asarray(probs)[order]
    ranks = np.empty(len(probs))
    start = 0
    while start < len(sorted_p):  # tied scores share their average rank
        end = start
        while end + 1 < len(sorted_p) and sorted_p[end + 1] == sorted_p[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def threshold_for_precision(probs: np.ndarray, labels: np.ndarray, target: float) -> tuple[float | None, float | None]:
    """(the lowest threshold at which precision >= target, the recall there); (None, None) if none reaches it."""
    labels = np.asarray(labels, dtype=bool)
    best: tuple[float | None, float | None] = (None, None)
    for t in np.unique(probs)[::-1]:  # from the strictest: recall only grows as the threshold falls
        predicted = probs >= t
        precision = _ratio(int((predicted & labels).sum()), int(predicted.sum()))
        if precision is not None and precision >= target:
            best = (float(t), _ratio(int((predicted & labels).sum()), int(labels.sum())))
    return best


def score(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5, target_precision: float = 0.95) -> Metrics:
    """All the metrics of probabilities against labels."""
    labels = np.asarray(labels, dtype=bool)
    predicted = np.asarray(probs) >= threshold
    tp, fp = int((predicted & labels).sum()), int((predicted & ~labels).sum())
    fn, tn = int((~predicted & labels).sum()), int((~predicted & ~labels).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    balanced = (recall + specificity) / 2 if recall is not None and specificity is not None else None
    t_target, r_target = threshold_for_precision(probs, labels, target_precision)
    return Metrics(frames=len(labels), positives=int(labels.sum()), negatives=int((~labels).sum()),
                   threshold=float(threshold), precision=precision, recall=recall, f1=f1, balanced_accuracy=balanced,
                   roc_auc=roc_auc(probs, labels), confusion={"tp": tp, "fp": fp, "tn": tn, "fn": fn},
                   target_precision=target_precision, threshold_at_target_precision=t_target,
                   recall_at_target_precision=r_target)

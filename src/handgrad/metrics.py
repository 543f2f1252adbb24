"""Classification metrics: confusion matrix and per-class precision, recall, F1."""

from __future__ import annotations

import numpy as np

from ._words import count


def confusion_matrix(y_true, y_pred, n_classes):
    """(M, M) counts: row = true class, column = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def classification_report(y_true, y_pred, classes):
    """Accuracy, the confusion matrix and per-class precision/recall/F1/support."""
    n = len(classes)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "n_examples": int(cm.sum()),
        "per_class": [
            {"class": str(c), "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, actual)
        ],
        "confusion_matrix": cm.tolist(),
    }


def format_report(report):
    """The report as aligned text: a per-class table, then the confusion matrix."""
    classes = [row["class"] for row in report["per_class"]]
    w = max(7, *(len(c) for c in classes))
    examples = count(report["n_examples"], "example")
    lines = [f"accuracy {report['accuracy']:.4f} on {examples}", "",
             f"{'class':>{w}}  precision  recall     f1  support"]
    for row in report["per_class"]:
        lines.append(f"{row['class']:>{w}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
                     f"{row['f1']:.4f}  {row['support']:7d}")
    cm = np.asarray(report["confusion_matrix"])
    cw = max(4, len(str(cm.max())) + 1, *(len(c) + 1 for c in classes))
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              " " * w + "".join(f"{c:>{cw}}" for c in classes)]
    for c, row in zip(classes, cm):
        lines.append(f"{c:>{w}}" + "".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)

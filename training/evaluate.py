"""Evaluate a bundle on a dataset split and write the measured metrics into its card.

python -m training.evaluate --bundle DIR --dataset folders --data-dir ../shared/datasets/knee-kl --split val

On the validation split it also fits Platt scaling (calibration) and chooses the operating threshold
(Youden J, or ``--target-sensitivity``); on other splits it measures at the card's threshold.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from core import metrics
from core.bundle import read_card, utc_now, write_card
from data.records import Record
from data.sources import DATASETS, load_dataset

VALIDATION_SPLIT = "val"
EVAL_BATCH = 64


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--split", default=VALIDATION_SPLIT)
    p.add_argument("--preset", default="knee-kl")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--view-position", default=None)
    p.add_argument("--target-sensitivity", type=float, default=None, help="choose the threshold for this sensitivity")
    p.add_argument("--no-calibration", action="store_true", help="do not fit Platt scaling")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--limit", type=int, default=0, help="at most N images (smoke runs)")
    return p.parse_args(argv)


def score_records(predictor, records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits and embeddings for every record, through the shared preprocessing."""
    from training.pipeline import stack_inputs

    logits, embeddings = [], []
    for start in range(0, len(records), EVAL_BATCH):
        chunk = stack_inputs(records[start : start + EVAL_BATCH], predictor.input_size_)
        logit, pooled = predictor.logits_and_embeddings(chunk)
        logits.append(logit)
        embeddings.append(pooled)
    return np.concatenate(logits), np.concatenate(embeddings)


def study_level(records: Sequence[Record], probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MURA protocol: a study's probability is the mean of its images' probabilities."""
    by_study: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_study[record.study_id].append(i)
    labels = np.array([max(records[i].label for i in idx) for idx in by_study.values()])
    study_probs = np.array([float(np.mean(probs[idx])) for idx in by_study.values()])
    return labels, study_probs


def per_body_part(records: Sequence[Record], probs: np.ndarray, threshold: float) -> list[dict]:
    rows = []
    for part in sorted({r.body_part for r in records}):
        idx = [i for i, r in enumerate(records) if r.body_part == part]
        y = np.array([records[i].label for i in idx])
        entry = {"body_part": part, "n": len(idx), "n_abnormal": int(y.sum()), "auroc": None, "kappa": None}
        if 0 < y.sum() < len(y):
            entry["auroc"] = metrics.auroc(y, probs[idx])
            entry["kappa"] = metrics.threshold_metrics(y, probs[idx], threshold)["kappa"]
        rows.append(entry)
    return rows


def evaluate(args: argparse.Namespace, command: str = "") -> dict:
    from core.bundle import load_bundle
    from core.inference import Predictor

    bundle = load_bundle(args.bundle)
    predictor = Predictor(bundle, warm=False)
    records, issues = load_dataset(
        args.dataset,
        args.data_dir,
        preset=args.preset,
        val_fraction=args.val_fraction,
        view_position=args.view_position,
    )
    for issue in issues:
        print(f"warning: {issue.path}: {issue.reason}", file=sys.stderr)
    rows = [r for r in records if r.split == args.split]
    if args.limit:
        rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    labels = np.array([r.label for r in rows])
    if len(rows) == 0 or labels.min() == labels.max():
        raise SystemExit(f"error: split '{args.split}' needs images of both classes; found {len(rows)} images")
    print(f"scoring {len(rows)} images of split '{args.split}'", file=sys.stderr, flush=True)
    logits, embeddings = score_records(predictor, rows)

    card = read_card(args.bundle)
    is_validation = args.split == VALIDATION_SPLIT
    slope, intercept = predictor.calibration_
    if is_validation and not args.no_calibration:
        raw = metrics.apply_platt(logits, 1.0, 0.0)
        slope, intercept = metrics.fit_platt(logits, labels)
        card["calibration"] = {
            "method": "Platt scaling",
            "slope": slope,
            "intercept": intercept,
            "fitted_on": f"{args.dataset}:{args.split}",
            "ece_before": metrics.expected_calibration_error(labels, raw),
            "ece_after": metrics.expected_calibration_error(labels, metrics.apply_platt(logits, slope, intercept)),
            "bins_before": metrics.calibration_bins(labels, raw),
            "note": "fitted and measured on the same validation split",
        }
    probs = metrics.apply_platt(logits, slope, intercept)
    if is_validation:
        method = "sensitivity" if args.target_sensitivity else "youden"
        threshold, how = metrics.choose_threshold(
            labels, probs, method=method, target_sensitivity=args.target_sensitivity, split=args.split
        )
        card["threshold"], card["threshold_method"] = threshold, how
        card["threshold_version"] = f"{card['version']}+{utc_now()}"
    threshold = float(card["threshold"])

    study_y, study_p = study_level(rows, probs)
    result = {
        "dataset": args.dataset,
        "split": args.split,
        "evaluated_at": utc_now(),
        "n_images": len(rows),
        "n_studies": len(study_y),
        "image_level": metrics.binary_summary(labels, probs, threshold, n_boot=args.n_boot),
        "study_level": metrics.binary_summary(study_y, study_p, threshold, n_boot=args.n_boot),
        "per_body_part": per_body_part(rows, probs, threshold),
        "command": command,
    }
    if is_validation:
        card["validation"] = result
    else:
        card.setdefault("evaluations", {})[args.split] = result
    write_card(args.bundle, card)
    return {"card": card, "result": result, "logits": logits, "embeddings": embeddings, "records": rows}


def format_summary(result: dict, card: dict) -> str:
    lines = [f"{'level':<8} {'n':>6} {'AUROC':>7} {'95% CI':>15} {'sens':>6} {'spec':>6} {'kappa':>6} {'ECE':>6}"]
    for level in ("image_level", "study_level"):
        s = result[level]
        t = s["at_threshold"]
        lines.append(
            f"{level.split('_')[0]:<8} {s['n']:>6} {s['auroc']:>7.3f} "
            f"{'[' + format(s['auroc_ci'][0], '.3f') + ', ' + format(s['auroc_ci'][1], '.3f') + ']':>15} "
            f"{t['sensitivity']:>6.3f} {t['specificity']:>6.3f} {t['kappa']:>6.3f} {s['calibration']['ece']:>6.3f}"
        )
    for part in result["per_body_part"]:
        auroc = "n/a" if part["auroc"] is None else f"{part['auroc']:.3f}"
        lines.append(f"  {part['body_part']}: n={part['n']} AUROC={auroc}")
    lines.append(f"threshold {card['threshold']:.4f} ({card['threshold_method']})")
    if card.get("calibration"):
        c = card["calibration"]
        lines.append(
            f"Platt scaling {c['slope']:.3f}·logit{c['intercept']:+.3f}: ECE {c['ece_before']:.3f} → {c['ece_after']:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from core.errors import BoneSentinelError

    args = parse_args(argv)
    try:
        out = evaluate(args, "python -m training.evaluate " + shlex.join(argv if argv is not None else sys.argv[1:]))
    except BoneSentinelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(out["result"], out["card"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

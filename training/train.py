"""Train an EfficientNetB0 bundle.

python -m training.train --dataset folders --data-dir ../shared/datasets/knee-kl --out BUNDLE
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core.bundle import new_card, save_bundle
from data.credits import credit_for
from data.records import Record
from data.sources import DATASETS, load_dataset

TRAIN_SPLIT = "train"
VAL_SPLIT = "val"
INTENDED_USE = (
    "Research and education only; not a medical device and not for clinical decisions. "
    "Flags radiographs that resemble the abnormal class of its training data."
)


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    data_dir: str
    out: str
    input_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    weights: str | None = None
    strategy: str = "default"
    seed: int = 0
    learning_rate: float = 3e-3
    warmup_epochs: int = 1
    head_epochs: int = 2
    patience: int = 8
    dropout: float = 0.3
    preset: str | None = "knee-kl"
    val_fraction: float = 0.1
    view_position: str | None = None
    limit: int = 0
    init_weights: str | None = None
    name: str = "bonesentinel"
    version: str = "0.1.0"
    verbose: int = 2


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--weights", choices=["none", "imagenet"], default="none")
    p.add_argument("--strategy", choices=["default", "mirrored", "multiworker"], default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=3e-3, dest="learning_rate")
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--head-epochs", type=int, default=2, help="ImageNet only: epochs with the base frozen")
    p.add_argument("--patience", type=int, default=8, help="early stopping on validation AUROC")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--preset", default="knee-kl", help="class-folder preset (folders only)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--view-position", default=None, help="ChestX-ray14 only: PA or AP")
    p.add_argument("--limit", type=int, default=0, help="use at most N images per split (smoke runs)")
    p.add_argument(
        "--init-weights",
        default=None,
        help="start from these weights (a bundle directory or a .weights.h5 file), e.g. to fine-tune at a larger input size",
    )
    p.add_argument("--name", default="bonesentinel")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1 if sys.stdout.isatty() else 2)
    a = p.parse_args(argv)
    return TrainConfig(
        **{k: v for k, v in vars(a).items() if k != "weights"},
        weights=None if a.weights == "none" else a.weights,
    )


def make_strategy(kind: str):
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()  # cluster from TF_CONFIG
    return tf.distribute.get_strategy()


def split_records(records: list[Record], split: str, limit: int) -> list[Record]:
    rows = [r for r in records if r.split == split]
    if limit:
        # Interleave classes so a small smoke subset still holds both labels.
        pos = [r for r in rows if r.label == 1]
        neg = [r for r in rows if r.label == 0]
        rows = [r for pair in zip(pos, neg, strict=False) for r in pair][:limit]
    return rows


def single_body_part(records: list[Record]) -> str | None:
    """The body part of the training data when there is exactly one (the gate warns on others)."""
    parts = {r.body_part for r in records}
    return parts.pop() if len(parts) == 1 else None


def load_initial_weights(model, source: str) -> None:
    """Copy weights from a bundle or a weights file; convolutional weights fit any input size."""
    import keras

    path = Path(source)
    if path.is_dir():
        model.set_weights(keras.saving.load_model(path / "model.keras", compile=False, safe_mode=True).get_weights())
    else:
        model.load_weights(str(path))


def initial_provenance(source: str | None) -> dict | None:
    """How the starting weights were made, so that a multi-stage model stays reproducible."""
    if not source:
        return None
    path = Path(source)
    if path.is_dir() and (path / "card.json").is_file():
        from core.bundle import read_card

        earlier = read_card(path)
        return {"bundle": path.name, "sha256": earlier["sha256"], "training": earlier.get("training")}
    return {"weights_file": path.name}


def class_weights(records: list[Record]) -> dict[int, float]:
    n = len(records)
    positives = sum(r.label for r in records)
    counts = {0: n - positives, 1: positives}
    return {c: n / (2.0 * max(k, 1)) for c, k in counts.items()}


def compile_model(model, lr, steps_per_epoch: int, cfg: TrainConfig, epochs: int) -> None:
    import keras

    total = max(1, steps_per_epoch * epochs)
    warmup = min(steps_per_epoch * cfg.warmup_epochs, total // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr / 10 if warmup else lr,
        decay_steps=max(1, total - warmup),
        alpha=0.01,
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )


def train(cfg: TrainConfig, argv: list[str] | None = None) -> Path:
    import keras

    from core.model import build_model
    from training.pipeline import Augmentation, make_dataset

    keras.utils.set_random_seed(cfg.seed)
    out = Path(cfg.out)
    work = out / ".train-state"
    work.mkdir(parents=True, exist_ok=True)

    records, issues = load_dataset(
        cfg.dataset, cfg.data_dir, preset=cfg.preset, val_fraction=cfg.val_fraction, view_position=cfg.view_position
    )
    for issue in issues:
        print(f"warning: {issue.path}: {issue.reason}", file=sys.stderr)
    train_rows = split_records(records, TRAIN_SPLIT, cfg.limit)
    val_rows = split_records(records, VAL_SPLIT, cfg.limit)
    if not train_rows or not val_rows:
        raise SystemExit(
            f"error: need '{TRAIN_SPLIT}' and '{VAL_SPLIT}' images; found {len(train_rows)} and {len(val_rows)}"
        )
    print(f"train {len(train_rows)} images, val {len(val_rows)} images", flush=True)

    train_ds = make_dataset(
        train_rows, cfg.input_size, cfg.batch_size, training=True, augmentation=Augmentation(), seed=cfg.seed
    )
    val_ds = make_dataset(val_rows, cfg.input_size, cfg.batch_size, training=False)
    steps = -(-len(train_rows) // cfg.batch_size)

    strategy = make_strategy(cfg.strategy)
    with strategy.scope():
        model = build_model(cfg.input_size, weights=cfg.weights, dropout=cfg.dropout)
        if cfg.init_weights:
            load_initial_weights(model, cfg.init_weights)

    best_path = work / "best.weights.h5"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work / "backup")),  # resumable after an interruption
        keras.callbacks.ModelCheckpoint(
            str(best_path), monitor="val_auc", mode="max", save_best_only=True, save_weights_only=True
        ),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=cfg.patience),
        keras.callbacks.CSVLogger(str(out / "train_log.csv"), append=True),
    ]
    fit = {"class_weight": class_weights(train_rows), "verbose": cfg.verbose, "callbacks": callbacks}
    started = time.time()
    histories = []
    if cfg.weights and cfg.head_epochs:
        # Phase 1: train the head on frozen ImageNet features; phase 2 fine-tunes with BN frozen.
        base_layers = [layer for layer in model.layers if layer.name not in ("logit", "head_dropout", "avg_pool")]
        for layer in base_layers:
            layer.trainable = False
        with strategy.scope():
            compile_model(model, cfg.learning_rate, steps, cfg, cfg.head_epochs)
        histories.append(model.fit(train_ds, validation_data=val_ds, epochs=cfg.head_epochs, **fit).history)
        for layer in base_layers:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        finetune_epochs = max(1, cfg.epochs - cfg.head_epochs)
        with strategy.scope():
            compile_model(model, cfg.learning_rate / 10, steps, cfg, finetune_epochs)
        histories.append(model.fit(train_ds, validation_data=val_ds, epochs=finetune_epochs, **fit).history)
    else:
        with strategy.scope():
            compile_model(model, cfg.learning_rate, steps, cfg, cfg.epochs)
        histories.append(model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, **fit).history)
    minutes = (time.time() - started) / 60

    val_auc = [v for h in histories for v in h.get("val_auc", [])]
    if best_path.exists():
        model.load_weights(str(best_path))
    best_epoch = int(max(range(len(val_auc)), key=val_auc.__getitem__)) + 1 if val_auc else 0
    command = "python -m training.train " + shlex.join(argv if argv is not None else sys.argv[1:])
    credit = credit_for(cfg.dataset, cfg.preset)
    use = credit.pop("intended_use", "")
    data_limitations = credit.pop(
        "limitations", [f"Trained only on {credit['name']}; other data may behave differently."]
    )
    card = new_card(
        name=cfg.name,
        version=cfg.version,
        input_size=cfg.input_size,
        training_data={
            **credit,
            "body_part": single_body_part(train_rows),
            "counts": {
                "train_images": len(train_rows),
                "train_abnormal": sum(r.label for r in train_rows),
                "val_images": len(val_rows),
                "val_abnormal": sum(r.label for r in val_rows),
                "train_patients": len({r.patient_id for r in train_rows}),
                "val_patients": len({r.patient_id for r in val_rows}),
            },
        },
        intended_use=" ".join(filter(None, [INTENDED_USE, use])),
        limitations=[
            *data_limitations,
            *(
                ["Trained from scratch (no pretrained weights) on a few thousand images at a reduced input size."]
                if not cfg.weights
                else []
            ),
            "Validation metrics come from the validation split that also chose the threshold and calibration; "
            "expect somewhat lower figures on new data.",
        ],
        extra={
            "training": {
                "command": command,
                "weights": cfg.weights or "none (from scratch)",
                "epochs_run": len(val_auc),
                "best_epoch": best_epoch,
                "best_val_auroc_keras": round(max(val_auc), 4) if val_auc else None,
                "minutes": round(minutes, 1),
                "config": {k: v for k, v in vars(cfg).items() if k not in ("out", "data_dir", "verbose")},
                "initialised_from": initial_provenance(cfg.init_weights),
            }
        },
    )
    save_bundle(model, card, out)
    (out / "train_history.json").write_text(json.dumps(histories, indent=1))
    print(f"wrote bundle {out} (best epoch {best_epoch}, {minutes:.1f} min)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    train(cfg, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

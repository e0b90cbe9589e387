"""Training input pipeline: does tf.data keep the model fed?

Trains the same model (``core.model.build_model`` at ``--input-size``, compiled by
``training.train.compile_model`` exactly as training does, with the same class weights and
batch size) on two inputs and compares training steps per second:

* pipeline  -- ``training.pipeline.make_dataset(..., training=True, augmentation=Augmentation())``
  on ``--images`` knee training radiographs from ``../shared/datasets/knee-kl/train`` (balanced
  classes), or on synthetic PNGs written to a temporary folder when the knee images are absent.
* synthetic -- ``tf.data.Dataset.from_tensors(batch).repeat()``: one in-memory batch of the same
  shape, i.e. an input pipeline that costs nothing.

The pipeline caches decoded images during its first pass, as epoch 1 of training does, so the
warm-up trains one full pass over the ``--images`` subset (timed separately as "first pass");
the measured steps then come from the cache with augmentation live, as in epochs 2+. Each of
``--rounds`` rounds times ``--steps`` steps of each input (order alternating between rounds);
the rates are medians over rounds, excluding each fit's first ``SKIP_STEPS`` steps.
Target: pipeline / synthetic >= 0.90.

The last line printed is one JSON object with every figure.

    .venv/bin/python benchmarks/pipeline.py [--images 512 --steps 40 --rounds 2 --batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
KNEE_DIR = REPO_ROOT.parent / "shared" / "datasets" / "knee-kl"
TRAIN_SPLIT = "train"
DEFAULT_INPUT_SIZE = 128
DEFAULT_BATCH_SIZE = 32
DEFAULT_IMAGES = 512
DEFAULT_STEPS = 40
DEFAULT_ROUNDS = 2
EXTRA_WARMUP_STEPS = 3  # after the cache-filling pass: retraces, optimizer slots, thread pools
SKIP_STEPS = 2  # steps at the start of each timed fit that are not counted (iterator start-up)
SCHEDULE_EPOCHS = 10  # only shapes the learning-rate schedule; it does not affect speed
TARGET_RATIO = 0.90
SYNTHETIC_SIDE = 224
SEED = 0
# shuffle=False only silences Keras' warning: a tf.data input is never shuffled by fit itself.
FIT_OPTIONS = {"verbose": 0, "shuffle": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE, help=f"default {DEFAULT_INPUT_SIZE}")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"default {DEFAULT_BATCH_SIZE}")
    p.add_argument(
        "--images", type=int, default=DEFAULT_IMAGES, help="training images in the cached subset (a batch multiple)"
    )
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="timed steps per input per round")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="alternating rounds (median over rounds)")
    p.add_argument("--synthetic-images", action="store_true", help="use generated PNGs even if knee images exist")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra- and inter-op threads (0: default)")
    args = p.parse_args(argv)
    if min(args.input_size, args.batch_size, args.rounds) < 1 or args.steps <= SKIP_STEPS:
        p.error(f"sizes and --rounds must be >= 1, --steps > {SKIP_STEPS}")
    if args.images < args.batch_size:
        p.error("--images must hold at least one batch")
    return args


def configure_tensorflow(threads: int = 0):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def knee_records(count: int, seed: int = SEED) -> list:
    """``count`` training records, classes interleaved, from a seeded shuffle of the split."""
    from data.sources import load_dataset

    if not (KNEE_DIR / TRAIN_SPLIT).is_dir():
        return []
    records, _ = load_dataset("folders", KNEE_DIR, preset="knee-kl")
    rows = [r for r in records if r.split == TRAIN_SPLIT]
    order = np.random.default_rng(seed).permutation(len(rows))
    rows = [rows[i] for i in order]
    positives = [r for r in rows if r.label == 1]
    negatives = [r for r in rows if r.label == 0]
    mixed = [r for pair in zip(positives, negatives, strict=False) for r in pair]
    return mixed[:count]


def synthetic_records(count: int, directory: str | Path) -> list:
    """``count`` bone-like PNGs written to ``directory``, alternating labels."""
    from PIL import Image

    from data.records import Record

    rng = np.random.default_rng(SEED)
    records = []
    for k in range(count):
        image = rng.normal(35, 10, (SYNTHETIC_SIDE, SYNTHETIC_SIDE))
        image[:, SYNTHETIC_SIDE // 3 : 2 * SYNTHETIC_SIDE // 3] += 150 - 40 * (k % 2)
        path = Path(directory) / f"{9000000 + k:07d}L.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        records.append(
            Record(
                image_path=str(path),
                label=k % 2,
                study_id=f"{TRAIN_SPLIT}/{path.stem}",
                patient_id=path.stem[:7],
                body_part="KNEE",
                split=TRAIN_SPLIT,
            )
        )
    return records


def compiled_model(input_size: int, batch_size: int, steps_per_epoch: int):
    """The model, compiled by training's own compile_model (Adam + cosine schedule, BCE, AUC)."""
    from core.model import build_model
    from training.train import TrainConfig, compile_model

    cfg = TrainConfig(dataset="folders", data_dir="", out="", input_size=input_size, batch_size=batch_size)
    model = build_model(input_size, weights=None, dropout=cfg.dropout)
    compile_model(model, cfg.learning_rate, steps_per_epoch, cfg, SCHEDULE_EPOCHS)
    return model


def synthetic_dataset(input_size: int, batch_size: int):
    """One fixed in-memory batch, repeated forever: the input pipeline at zero cost."""
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    x = rng.uniform(0, 255, (batch_size, input_size, input_size, 3)).astype(np.float32)
    y = (np.arange(batch_size) % 2).astype(np.float32)
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def step_timer():
    """A Keras callback recording the wall-clock time at the end of every training step."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.ends.append(time.perf_counter())

        def steps_per_s(self, skip: int) -> float:
            counted = self.ends[skip:]
            return (len(counted) - 1) / (counted[-1] - counted[0])

    return StepTimer()


def timed_fit(model, dataset, steps: int, class_weight: dict[int, float]) -> float:
    """Steps per second over ``steps`` training steps, excluding the first SKIP_STEPS."""
    timer = step_timer()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, class_weight=class_weight, callbacks=[timer], **FIT_OPTIONS)
    return timer.steps_per_s(SKIP_STEPS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tf = configure_tensorflow(args.threads)
    from training.pipeline import Augmentation, make_dataset
    from training.train import class_weights

    images = args.images - args.images % args.batch_size  # no ragged last batch in the timed steps
    with tempfile.TemporaryDirectory(prefix="bonesentinel-pipeline-") as workdir:
        records = [] if args.synthetic_images else knee_records(images)
        source = f"real knee radiographs ({KNEE_DIR / TRAIN_SPLIT})"
        if len(records) < images:
            records, source = synthetic_records(images, workdir), f"synthetic {SYNTHETIC_SIDE}x{SYNTHETIC_SIDE} PNGs"
        steps_per_pass = len(records) // args.batch_size
        weights = class_weights(records)
        pipeline = make_dataset(
            records, args.input_size, args.batch_size, training=True, augmentation=Augmentation(), seed=SEED
        ).repeat()
        synthetic = synthetic_dataset(args.input_size, args.batch_size)
        model = compiled_model(args.input_size, args.batch_size, steps_per_pass)

        # Warm-up: one full pass fills the cache (as epoch 1 does), then a few steps of each input.
        started = time.perf_counter()
        model.fit(pipeline, epochs=1, steps_per_epoch=steps_per_pass, class_weight=weights, **FIT_OPTIONS)
        first_pass_s = time.perf_counter() - started
        for dataset in (pipeline, synthetic):
            model.fit(dataset, epochs=1, steps_per_epoch=EXTRA_WARMUP_STEPS, class_weight=weights, **FIT_OPTIONS)

        rates: dict[str, list[float]] = {"pipeline": [], "synthetic": []}
        inputs = {"pipeline": pipeline, "synthetic": synthetic}
        for round_index in range(args.rounds):
            order = list(inputs) if round_index % 2 == 0 else list(inputs)[::-1]
            for name in order:
                rates[name].append(timed_fit(model, inputs[name], args.steps, weights))
                print(f"round {round_index + 1}: {name:<9} {rates[name][-1]:.3f} steps/s", file=sys.stderr)

    pipeline_rate = statistics.median(rates["pipeline"])
    synthetic_rate = statistics.median(rates["synthetic"])
    result = {
        "pipeline_steps_per_s": round(pipeline_rate, 4),
        "synthetic_steps_per_s": round(synthetic_rate, 4),
        "ratio": round(pipeline_rate / synthetic_rate, 3),
        "target_ratio": TARGET_RATIO,
        "pipeline_img_per_s": round(pipeline_rate * args.batch_size, 1),
        "first_pass_s": round(first_pass_s, 1),
        "input_size": args.input_size,
        "batch_size": args.batch_size,
        "images": len(records),
        "source": source,
        "steps": args.steps,
        "rounds": args.rounds,
        "tensorflow": tf.__version__,
        "cpus": os.cpu_count(),
    }
    print_report(result)
    print(json.dumps(result))
    return 0


def print_report(result: dict) -> None:
    print(f"Model     EfficientNetB0 (random init) at {result['input_size']}, batch {result['batch_size']}")
    print(f"Images    {result['images']} {result['source']}, cached after one pass")
    print(f"Timing    {result['steps']} steps per input per round, {result['rounds']} rounds, median\n")
    print(f"First pass (trace the train step, decode, fill the cache): {result['first_pass_s']:.1f} s")
    print(f"{'input':<40} {'steps/s':>9} {'img/s':>8}")
    for name, label in (("pipeline", "make_dataset (cache + augmentation)"), ("synthetic", "in-memory tensors")):
        rate = result[f"{name}_steps_per_s"]
        print(f"{label:<40} {rate:>9.3f} {rate * result['batch_size']:>8.1f}")
    verdict = "meets" if result["ratio"] >= result["target_ratio"] else "below"
    print(f"\nRatio pipeline / synthetic: {result['ratio']:.3f} ({verdict} the {result['target_ratio']:.2f} target)\n")


if __name__ == "__main__":
    raise SystemExit(main())

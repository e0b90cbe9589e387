"""Per-image latency of scoring + Grad-CAM: BoneSentinel's compiled path against a naive one.

What one "run" measures, per image, from the file's bytes to an RGB overlay:

* fast  -- BoneSentinel: ``Predictor.score_files([(name, bytes)], explain=True)`` (decode,
  letterbox, one compiled tf.function returning logit + embedding + Grad-CAM map), then
  ``core.gradcam.overlay_for``.
* naive -- the usual tutorial code: the same decode and preprocessing, ``model.predict(x)``
  for the probability, then keras-io's ``make_gradcam_heatmap`` (examples/vision/grad_cam.py),
  which builds a new ``keras.Model(model.inputs, [top_activation, logit])`` on every call and
  runs it eagerly under a GradientTape, then the same overlay.
* jit   -- only with ``--jit``: BoneSentinel's graph (same maths) in a separate
  ``tf.function(jit_compile=True)`` (XLA), built here around the bundle's model; core is untouched.

The variants run in the same process, interleaved (their order rotates every run, so drift in
machine load hits all of them alike); medians are over ``--runs`` runs after ``--warmup``.
Also measured: a 4-image study end to end (``score_files`` on 4 files + 4 overlays) and batch
throughput of ``Predictor.predict_proba`` on a (64, S, S, 3) batch.

Images: real knee radiographs from ``../shared/datasets/knee-kl/val`` beside the repository
when present, else synthetic PNGs. Model: ``--bundle DIR``, else the bundled default, else a
random-weight EfficientNetB0 at ``--input-size`` (weights do not change the timing).

TensorFlow alternatives: ``--threads N`` sets intra/inter-op thread pools; ``--onednn on|off``
sets ``TF_ENABLE_ONEDNN_OPTS`` before TensorFlow is imported (it is read only at import).
The equivalent by hand: ``TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python benchmarks/inference.py``.

The last line printed is one JSON object with every figure.

    .venv/bin/python benchmarks/inference.py [--runs 30 --warmup 5] [--threads N] [--onednn off] [--jit]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
KNEE_VAL_DIR = REPO_ROOT.parent / "shared" / "datasets" / "knee-kl" / "val"
DEFAULT_INPUT_SIZE = 128  # the shipped knee model's input size
IMAGENET_INPUT_SIZE = 224
DEFAULT_RUNS = 30
DEFAULT_WARMUP = 5
DEFAULT_IMAGES = 32  # distinct images cycled through by the per-image runs
STUDY_IMAGES = 4
BATCH_IMAGES = 64
DEFAULT_BATCH_REPEATS = 7
SYNTHETIC_SIDE = 224  # the knee PNGs are 224×224
RANDOM_SEED = 1234


# --------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per variant (default {DEFAULT_RUNS})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help=f"untimed runs first (default {DEFAULT_WARMUP})")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="distinct images to cycle through")
    p.add_argument("--batch-repeats", type=int, default=DEFAULT_BATCH_REPEATS, help="timed 64-image batches")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model, else random weights)")
    p.add_argument(
        "--random-weights", action="store_true", help="use a random-weight model even if a bundle is available"
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=DEFAULT_INPUT_SIZE,
        help=f"input size of the random-weight model (default {DEFAULT_INPUT_SIZE}, the shipped model's)",
    )
    p.add_argument("--synthetic", action="store_true", help="use synthetic PNGs even if the knee images exist")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra- and inter-op threads (0: default)")
    p.add_argument("--inter-threads", type=int, default=None, help="inter-op threads if different from --threads")
    p.add_argument(
        "--onednn", choices=["on", "off"], default=None, help="set TF_ENABLE_ONEDNN_OPTS (default: leave as is)"
    )
    p.add_argument("--jit", action="store_true", help="also time an XLA jit_compile=True variant")
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.images < 1 or args.batch_repeats < 1:
        p.error("--runs, --images and --batch-repeats must be >= 1, --warmup >= 0")
    return args


def configure_tensorflow(threads: int = 0, inter_threads: int | None = None, onednn: str | None = None):
    """Set the environment TensorFlow reads at import, import it, size its thread pools."""
    if onednn is not None:
        if "tensorflow" in sys.modules:
            print("warning: TensorFlow is already imported; --onednn has no effect", file=sys.stderr)
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn == "on" else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Keras warns once per model called with a bare tensor instead of a one-element list.
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_threads or threads)
    elif inter_threads:
        tf.config.threading.set_inter_op_parallelism_threads(inter_threads)
    return tf


def synthetic_radiograph(height: int = SYNTHETIC_SIDE, width: int = SYNTHETIC_SIDE, seed: int = 0) -> np.ndarray:
    """A bone-like uint8 image: two bright shafts meeting at a joint space, on noise."""
    rng = np.random.default_rng(seed)
    image = rng.normal(35, 10, (height, width))
    cols = np.arange(width)
    centre = width // 2 + rng.integers(-width // 10, width // 10 + 1)
    shaft = np.exp(-(((cols - centre) / (width / 6)) ** 2)) * 170
    gap = height // 2 + rng.integers(-height // 12, height // 12 + 1)
    image[: gap - 3] += shaft
    image[gap + 3 :] += shaft * 0.9
    return np.clip(image, 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def knee_files(directory: Path, count: int) -> list[Path]:
    """``count`` files spread evenly over the sorted folder (so every KL grade is represented)."""
    paths = sorted(directory.glob("*/*.png"))
    if not paths:
        return []
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def load_images(count: int, synthetic: bool = False) -> tuple[list[tuple[str, bytes]], str]:
    """(name, bytes) pairs and a description of where they came from."""
    paths = [] if synthetic else knee_files(KNEE_VAL_DIR, count)
    if paths:
        return [(p.name, p.read_bytes()) for p in paths], f"real knee radiographs ({KNEE_VAL_DIR})"
    images = [(f"synthetic{k:03d}.png", png_bytes(synthetic_radiograph(seed=k))) for k in range(count)]
    return images, f"synthetic {SYNTHETIC_SIDE}x{SYNTHETIC_SIDE} PNGs"


def random_bundle(input_size: int, directory: str | Path) -> Path:
    """A random-weight bundle (timing does not depend on the weights)."""
    import keras

    from core.bundle import new_card, save_bundle
    from core.model import build_model

    keras.utils.set_random_seed(RANDOM_SEED)
    card = new_card(
        name="benchmark-random",
        version="0.0.0",
        input_size=input_size,
        training_data={"name": "none (random weights)", "credit": "n/a", "licence": "n/a"},
        intended_use="benchmarks only",
        limitations=["random weights: for timing only"],
    )
    path = Path(directory) / f"random-{input_size}"
    save_bundle(build_model(input_size, weights=None), card, path)
    return path


def resolve_bundle(args: argparse.Namespace, workdir: str) -> tuple[Path | None, str]:
    """The bundle directory to load (None: the default one) and how it was chosen."""
    from core.bundle import CARD_FILE, DEFAULT_BUNDLE_DIR

    if args.bundle and not args.random_weights:
        return Path(args.bundle), f"bundle {args.bundle}"
    if not args.random_weights and (DEFAULT_BUNDLE_DIR / CARD_FILE).is_file():
        return None, f"default bundle {DEFAULT_BUNDLE_DIR}"
    return random_bundle(args.input_size, workdir), f"random-weight EfficientNetB0 at {args.input_size}"


def scorable(predictor, images: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The images the predictor scores (its input gate may refuse some), and the refusals' reasons."""
    scores = predictor.score_files(images, explain=False)
    kept = [item for item, score in zip(images, scores, strict=True) if score.scored]
    refused = [f"{score.name}: {score.error}" for score in scores if not score.scored]
    return kept, refused


# --------------------------------------------------------------------------- the measured paths


def fast_path(predictor, name: str, data: bytes):
    """BoneSentinel: one compiled call for probability + map, then the overlay."""
    from core.gradcam import overlay_for

    [score] = predictor.score_files([(name, data)], explain=True)
    if not score.scored:
        raise RuntimeError(f"{name} was refused: {score.error}")
    return score.probability, overlay_for(score.image.pixels, score.cam, score.box, predictor.input_size_)


def make_gradcam_heatmap(img_array, model, last_conv_layer_name: str = "top_activation", output_layer: str = "logit"):
    """keras-io's Grad-CAM (examples/vision/grad_cam.py), on the logit instead of a softmax column.

    As in the tutorial, the gradient model is rebuilt on every call and run eagerly. Only the
    final division is zero-safe (an all-negative map would otherwise turn into NaNs).
    """
    import keras
    import tensorflow as tf

    grad_model = keras.models.Model(
        model.inputs, [model.get_layer(last_conv_layer_name).output, model.get_layer(output_layer).output]
    )
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array, training=False)
        class_channel = preds[:, 0]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    last_conv_layer_output = last_conv_layer_output[0]
    heatmap = last_conv_layer_output @ pooled_grads[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap, axis=-1)
    heatmap = tf.math.divide_no_nan(tf.maximum(heatmap, 0), tf.math.reduce_max(heatmap))
    return heatmap.numpy()


def naive_path(model, input_size: int, name: str, data: bytes):
    """Tutorial style: model.predict for the probability, a rebuilt eager Grad-CAM model for the map."""
    from core.decode import decode_bytes
    from core.gradcam import overlay_for
    from core.preprocess import letterbox, to_model_input

    image = decode_bytes(data, name)
    canvas, box = letterbox(image.pixels, input_size)
    x = to_model_input(canvas)[None]
    probability = float(model.predict(x, verbose=0)[0, 0])
    heatmap = make_gradcam_heatmap(x, model)
    return probability, overlay_for(image.pixels, heatmap, box, input_size)


def make_jit_explain(model, input_size: int):
    """The same graph as Predictor's score_and_explain, compiled with XLA (jit_compile=True)."""
    import keras
    import tensorflow as tf

    from core.model import FEATURE_LAYER, LOGIT_LAYER, POOL_LAYER

    explainer = keras.Model(
        model.inputs,
        [model.get_layer(name).output for name in (FEATURE_LAYER, POOL_LAYER, LOGIT_LAYER)],
        name="explainer_jit",
    )
    spec = [tf.TensorSpec([None, input_size, input_size, 3], tf.float32)]

    @tf.function(input_signature=spec, jit_compile=True)
    def score_and_explain(x):
        with tf.GradientTape() as tape:
            features, pooled, logit = explainer(x, training=False)
            target = tf.reduce_sum(logit)
        grads = tape.gradient(target, features)
        weights = tf.reduce_mean(grads, axis=(1, 2))
        cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", features, weights))
        cam = tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=(1, 2), keepdims=True))
        return logit[:, 0], pooled, cam

    return score_and_explain


def jit_path(predictor, jitted, name: str, data: bytes):
    from core.gradcam import overlay_for

    prepared = predictor.prepare(name, data=data)
    logit, _, cam = jitted(prepared.model_input[None])
    probability = float(predictor.probability(logit.numpy())[0])
    return probability, overlay_for(prepared.image.pixels, cam.numpy()[0], prepared.box, predictor.input_size_)


def study_path(predictor, files: list[tuple[str, bytes]]) -> list:
    from core.gradcam import overlay_for

    scores = predictor.score_files(files, explain=True)
    return [overlay_for(s.image.pixels, s.cam, s.box, predictor.input_size_) for s in scores if s.scored]


# --------------------------------------------------------------------------- timing


def time_interleaved(variants: dict[str, Callable[[int], object]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call for each variant; the calling order rotates every run."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            variants[name](i)
            elapsed_ms = (time.perf_counter() - start) * 1000
            if i >= warmup:
                times[name].append(elapsed_ms)
    return times


def summarise(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median": statistics.median(ordered), "min": ordered[0], "p90": p90}


def batch_throughput(fn: Callable[[np.ndarray], object], batch: np.ndarray, repeats: int) -> float:
    """Images per second: batch size / median seconds per call, after one untimed call."""
    fn(batch)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        seconds.append(time.perf_counter() - start)
    return len(batch) / statistics.median(seconds)


def agreement(predictor, model, name: str, data: bytes) -> dict[str, float]:
    """How far the naive path's probability and map are from the fast path's (should be ~0)."""
    from core.decode import decode_bytes
    from core.preprocess import letterbox, to_model_input

    [score] = predictor.score_files([(name, data)], explain=True)
    canvas, _ = letterbox(decode_bytes(data, name).pixels, predictor.input_size_)
    x = to_model_input(canvas)[None]
    naive_probability = float(model.predict(x, verbose=0)[0, 0])
    heatmap = make_gradcam_heatmap(x, model)
    return {
        "probability_abs_diff": abs(naive_probability - float(predictor.probability(np.array([score.logit]))[0])),
        "cam_max_abs_diff": float(np.max(np.abs(heatmap - score.cam))),
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tf = configure_tensorflow(args.threads, args.inter_threads, args.onednn)
    from core.bundle import load_bundle
    from core.inference import Predictor

    images, source = load_images(args.images, synthetic=args.synthetic)
    with tempfile.TemporaryDirectory(prefix="bonesentinel-bench-") as workdir:
        bundle_dir, bundle_note = resolve_bundle(args, workdir)
        predictor = Predictor(load_bundle(bundle_dir))
    images, refused = scorable(predictor, images)
    if refused:
        print(f"note: {len(refused)} image(s) refused by the input gate and left out: {refused[:3]}", file=sys.stderr)
    if not images:
        print("error: the input gate refused every image; nothing to time", file=sys.stderr)
        return 1
    model = predictor.bundle_.model
    size = predictor.input_size_

    def pick(i: int) -> tuple[str, bytes]:
        return images[i % len(images)]

    variants: dict[str, Callable[[int], object]] = {
        "fast": lambda i: fast_path(predictor, *pick(i)),
        "naive": lambda i: naive_path(model, size, *pick(i)),
    }
    if args.jit:
        jitted = make_jit_explain(model, size)
        variants["jit"] = lambda i: jit_path(predictor, jitted, *pick(i))
    per_image = {name: summarise(v) for name, v in time_interleaved(variants, args.runs, args.warmup).items()}

    def study(i: int) -> object:
        return study_path(predictor, [pick(STUDY_IMAGES * i + k) for k in range(STUDY_IMAGES)])

    study4 = summarise(time_interleaved({"study4": study}, args.runs, args.warmup)["study4"])

    batch = np.stack([predictor.prepare(*pick(k)).model_input for k in range(BATCH_IMAGES)])
    batch_img_per_s = batch_throughput(predictor.predict_proba, batch, args.batch_repeats)
    batch_explain_img_per_s = batch_throughput(predictor.explain, batch, args.batch_repeats)
    check = agreement(predictor, model, *pick(0))

    fast, naive = per_image["fast"]["median"], per_image["naive"]["median"]
    result = {
        "fast_ms_median": round(fast, 2),
        "naive_ms_median": round(naive, 2),
        "speedup": round(naive / fast, 2),
        "study4_ms_median": round(study4["median"], 2),
        "batch_img_per_s": round(batch_img_per_s, 1),
        "batch_explain_img_per_s": round(batch_explain_img_per_s, 1),
        "jit_ms_median": round(per_image["jit"]["median"], 2) if "jit" in per_image else None,
        "fast_ms_p90": round(per_image["fast"]["p90"], 2),
        "naive_ms_p90": round(per_image["naive"]["p90"], 2),
        "input_size": size,
        "runs": args.runs,
        "warmup": args.warmup,
        "images": source,
        "n_images": len(images),
        "n_refused": len(refused),
        "model": bundle_note,
        "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpus": os.cpu_count(),
        **{k: float(f"{v:.3g}") for k, v in check.items()},
    }
    print_report(result, per_image, study4)
    print(json.dumps(result))
    return 0


def print_report(result: dict, per_image: dict[str, dict[str, float]], study4: dict[str, float]) -> None:
    size_note = " (224 = ImageNet size, not the shipped 128)" if result["input_size"] == IMAGENET_INPUT_SIZE else ""
    threads = f"intra {result['intra_op_threads'] or 'default'}, inter {result['inter_op_threads'] or 'default'}"
    print(f"Model     {result['model']}, input {result['input_size']}x{result['input_size']}{size_note}")
    print(f"Images    {result['n_images']} {result['images']}")
    print(f"TF        {result['tensorflow']}, oneDNN {result['onednn']}, threads {threads}, {result['cpus']} CPUs")
    print(f"Runs      {result['runs']} timed after {result['warmup']} warm-up, interleaved\n")
    labels = {
        "fast": "BoneSentinel score_files + overlay",
        "naive": "model.predict + keras-io Grad-CAM",
        "jit": "XLA jit_compile explainer + overlay",
    }
    print(f"{'per image (decode → overlay)':<40} {'median ms':>10} {'min ms':>9} {'p90 ms':>9}")
    for name, stats in per_image.items():
        print(f"{labels[name]:<40} {stats['median']:>10.1f} {stats['min']:>9.1f} {stats['p90']:>9.1f}")
    print(f"{'4-image study, end to end':<40} {study4['median']:>10.1f} {study4['min']:>9.1f} {study4['p90']:>9.1f}")
    print(f"\nSpeed-up of BoneSentinel over naive: {result['speedup']:.2f}x")
    print(f"Batch of {BATCH_IMAGES}: predict_proba {result['batch_img_per_s']:.1f} img/s, ", end="")
    print(f"explain (with Grad-CAM) {result['batch_explain_img_per_s']:.1f} img/s")
    print(
        f"Agreement fast vs naive: |Δp| {result['probability_abs_diff']:.2g}, "
        f"max |Δcam| {result['cam_max_abs_diff']:.2g}\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""tf.data input pipeline: parallel decode through core preprocessing, cache, augment, prefetch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from core.decode import decode_file
from core.preprocess import letterbox, to_model_input
from data.records import Record

SHUFFLE_BUFFER = 8192


@dataclass(frozen=True)
class Augmentation:
    """Radiograph-safe geometry and intensity jitter; never a vertical flip."""

    rotation: float = 0.03  # fraction of a full turn: about ±11°
    shift: float = 0.06
    zoom: float = 0.10
    brightness: float = 0.15
    contrast: float = 0.20
    horizontal_flip: bool = True  # left and right knees are mirror images


def load_gray(path: str, size: int) -> np.ndarray:
    """One file → (size, size, 1) float32 0–255 via the shared preprocessing."""
    canvas, _ = letterbox(decode_file(path).pixels, size)
    return canvas[..., None]


def _augmenter(aug: Augmentation, seed: int):
    import keras

    layers = [
        keras.layers.RandomRotation(aug.rotation, fill_mode="constant", seed=seed),
        keras.layers.RandomTranslation(aug.shift, aug.shift, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom(aug.zoom, fill_mode="constant", seed=seed + 2),
        keras.layers.RandomBrightness(aug.brightness, value_range=(0.0, 255.0), seed=seed + 3),
        keras.layers.RandomContrast(aug.contrast, seed=seed + 4),
    ]
    if aug.horizontal_flip:
        layers.insert(0, keras.layers.RandomFlip("horizontal", seed=seed + 5))
    return keras.Sequential(layers, name="augment")


def make_dataset(
    records: Sequence[Record],
    input_size: int,
    batch_size: int,
    *,
    training: bool,
    augmentation: Augmentation | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ((B, S, S, 3) float 0–255, (B,) float labels)."""
    paths = tf.constant([r.image_path for r in records])
    labels = tf.constant([float(r.label) for r in records], dtype=tf.float32)

    def read(path, label):
        image = tf.numpy_function(lambda p: load_gray(p.decode(), input_size), [path], tf.float32)
        image.set_shape((input_size, input_size, 1))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if training:
        ds = ds.shuffle(min(len(records), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmentation is not None:
        augment = _augmenter(augmentation, seed)
        ds = ds.map(
            lambda x, y: (tf.clip_by_value(augment(x, training=True), 0.0, 255.0), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.map(lambda x, y: (tf.repeat(x, 3, axis=-1), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def stack_inputs(records: Sequence[Record], input_size: int) -> np.ndarray:
    """All records as one (N, S, S, 3) array (evaluation of modest splits)."""
    return np.stack([to_model_input(load_gray(r.image_path, input_size)[..., 0]) for r in records])

"""EfficientNetB0 classifier built flat, so Grad-CAM can reach ``top_activation``."""

from __future__ import annotations

ARCHITECTURE = "EfficientNetB0"
FEATURE_LAYER = "top_activation"
POOL_LAYER = "avg_pool"
LOGIT_LAYER = "logit"
PROBABILITY_LAYER = "probability"
DEFAULT_DROPOUT = 0.3


def build_model(input_size: int = 224, weights: str | None = None, dropout: float = DEFAULT_DROPOUT):
    """EfficientNetB0 → global average pool → dropout → logit → sigmoid.

    ``weights`` is None (random init) or "imagenet" (needs the network once). Inputs are
    float 0–255, three channels; the network rescales internally.
    """
    import keras

    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    base = keras.applications.EfficientNetB0(include_top=False, weights=weights, input_tensor=inputs)
    x = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(base.output)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logit = keras.layers.Dense(1, name=LOGIT_LAYER)(x)
    probability = keras.layers.Activation("sigmoid", name=PROBABILITY_LAYER, dtype="float32")(logit)
    return keras.Model(inputs, probability, name="bonesentinel_efficientnetb0")

"""BoneSentinel core: decoding, preprocessing, model, inference, Grad-CAM, metrics, bundles.

Imports neither Streamlit nor ``training``; TensorFlow is imported lazily by the modules
that need it so that decoding and metrics stay light.
"""

__version__ = "0.1.0"

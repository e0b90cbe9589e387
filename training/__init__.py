"""Training and evaluation CLIs that produce and measure model bundles."""

"""One entry point for every dataset adapter."""

from __future__ import annotations

from pathlib import Path

from data.records import Issue, Record

DATASETS = ("mura", "chestxray14", "folders")


def load_dataset(name: str, root: str | Path, **options) -> tuple[list[Record], list[Issue]]:
    """Records and issues for dataset ``name`` under ``root``.

    Options: ``preset`` (folders), ``view_position`` (chestxray14), ``val_fraction``
    (mura, chestxray14: patient-disjoint validation carved out of the training data).
    """
    if name == "folders":
        from data.folders import PRESETS

        preset = PRESETS[options.get("preset") or "knee-kl"]
        from data.folders import load_folders

        return load_folders(root, preset)
    if name == "mura":
        from data.mura import load_mura

        return load_mura(root, val_fraction=options.get("val_fraction", 0.1))
    if name == "chestxray14":
        from data.chestxray14 import load_chestxray14

        return load_chestxray14(
            root,
            val_fraction=options.get("val_fraction", 0.1),
            view_position=options.get("view_position"),
        )
    raise ValueError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")

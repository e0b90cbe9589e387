"""``python -m data <dataset> ROOT --summary``: what an adapter reads, as one JSON document.

Issues also go to stderr, one per line. Exit 0 on success, 2 on a usage error or missing root.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from data.folders import PRESETS
from data.records import summarize
from data.sources import DATASETS, load_dataset

MAX_ISSUES = 200


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("root", help="dataset folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="folders only (default knee-kl)")
    parser.add_argument("--val-fraction", type=float, help="mura, chestxray14: patient share carved from train (0.1)")
    parser.add_argument("--view-position", help="chestxray14 only: keep PA or AP rows")
    parser.add_argument("--summary", action="store_true", help="print counts and issues as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 on bad arguments
    if not args.summary:
        parser.error("nothing to do: pass --summary")
    if args.preset and args.dataset != "folders":
        parser.error("--preset applies to the folders dataset only")
    if args.view_position and args.dataset != "chestxray14":
        parser.error("--view-position applies to chestxray14 only")
    if args.val_fraction is not None:
        if args.dataset == "folders":
            parser.error("--val-fraction applies to mura and chestxray14 only (folders keep their own splits)")
        if not 0.0 <= args.val_fraction < 1.0:
            parser.error("--val-fraction must be in [0, 1)")
    root = Path(args.root)
    if not root.is_dir():
        print(f"python -m data: error: dataset root {root} does not exist or is not a folder", file=sys.stderr)
        return 2

    options = {"preset": args.preset, "view_position": args.view_position}
    if args.val_fraction is not None:
        options["val_fraction"] = args.val_fraction
    records, issues = load_dataset(args.dataset, root, **options)
    for issue in issues:
        print(f"{issue.path}: {issue.reason}", file=sys.stderr)
    document = {
        "dataset": args.dataset,
        "root": str(root.resolve()),
        "summary": summarize(records),
        "issues": [asdict(issue) for issue in issues[:MAX_ISSUES]],
        "issues_total": len(issues),
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

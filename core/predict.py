"""Score radiographs from the command line and print one JSON document.

python -m core.predict [--bundle DIR] [--aggregate mean|max] [--gradcam-dir DIR] FILE...

Exit status: 0 every file scored; 3 some rejected (the rest scored); 4 none scored;
2 usage error or unusable model bundle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOME_REJECTED = 3
EXIT_NONE_SCORED = 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default is fine, but say where help is
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from core.aggregate import AGGREGATES

    p = _Parser(prog="python -m core.predict", description="Score a study of radiographs (PNG, JPEG, DICOM).")
    p.add_argument("files", nargs="+", metavar="FILE", help="images of one study")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument(
        "--aggregate", choices=AGGREGATES, default="mean", help="study aggregate (default: mean, the MURA protocol)"
    )
    p.add_argument("--gradcam-dir", help="write one Grad-CAM overlay PNG per scored image here")
    return p.parse_args(argv)


def overlay_name(name: str, used: set[str]) -> str:
    stem = Path(name).stem or "image"
    candidate, n = f"{stem}_gradcam.png", 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_gradcam_{n}.png"
    used.add(candidate)
    return candidate


def run(argv: list[str] | None = None) -> tuple[dict, int]:
    """Score the files; returns (JSON document, exit status). Raises BundleError for bad bundles."""
    from core.aggregate import aggregate_study
    from core.gradcam import overlay_for
    from core.inference import Predictor
    from core.limits import enforce_study

    args = parse_args(argv)
    enforce_study(args.files)  # an oversized study is refused before TensorFlow loads
    predictor = Predictor.from_bundle_dir(args.bundle, warm=False)
    explain = bool(args.gradcam_dir)
    scores = predictor.score_files(args.files, explain=explain)
    images = []
    for score in scores:
        images.append(
            {
                "file": score.name,
                "probability": None if score.probability is None else round(score.probability, 6),
                "error": score.error,
                "gate": score.gate.as_json() if score.gate else None,
            }
        )
    scored = [s for s in scores if s.scored]
    study = {
        "probability": None,
        "decision": None,
        "aggregate": args.aggregate,
        "scored": len(scored),
        "rejected": len(scores) - len(scored),
    }
    if scored:
        result = aggregate_study([s.probability for s in scored], predictor.threshold_, args.aggregate)
        study.update(probability=round(result.probability, 6), decision=result.decision)
    if explain and scored:
        out_dir = Path(args.gradcam_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for score, entry in zip(scores, images, strict=True):
            if score.scored:
                path = out_dir / overlay_name(score.name, used)
                overlay_for(score.image.pixels, score.cam, score.box, predictor.input_size_).save(path)
                entry["gradcam"] = str(path)
    card = predictor.card
    document = {
        "model": {
            "name": card["name"],
            "version": card["version"],
            "sha256": card["sha256"],
            "threshold": predictor.threshold_,
        },
        "images": images,
        "study": study,
    }
    status = EXIT_OK if not study["rejected"] else (EXIT_SOME_REJECTED if scored else EXIT_NONE_SCORED)
    return document, status


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # pydicom's parser warnings still reach its logger; on stderr they would read as crashes.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom")
    from core.errors import BoneSentinelError

    try:
        document, status = run(argv)
    except BoneSentinelError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # e.g. an unwritable --gradcam-dir
        print(f"error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())

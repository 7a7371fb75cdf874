"""Classify text with a trained variant: `python -m tools.predict --variant relu "a review"`.

IMDB variants take review text, tokenized exactly as in training; order-task variants take a symbol
string such as "EabXcd...YabB". A long review comes from a file (`--file review.txt`) or stdin (`-`,
or `--file -`), up to the longest review the pipeline reads (16 MiB). Paths come from dvc.yaml's
`vars` (the pipeline's single source of paths).
"""

from __future__ import annotations

import argparse
import sys

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.core.files import workspace_paths
from rnnlab.runtime import environment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("text", nargs="?", help="review text (IMDB variants) or symbol string (order variants); - reads stdin")
    parser.add_argument("--file", help="read the text from this file instead (- for stdin)")
    args = parser.parse_args(argv)
    if (args.text is None) == (args.file is None):
        parser.error("give the text, or --file FILE (- for stdin), but not both")
    params = load_params()
    environment.configure(params.runtime)
    from rnnlab.evaluation.inference import STDIN, check_text_size, predict_text, read_review  # loads torch: after configure

    if args.file is not None or args.text == STDIN:
        text = read_review(args.file if args.file is not None else STDIN)
    else:
        check_text_size(args.text)
        text = args.text
    class_names, probabilities = predict_text(params, args.variant, text, workspace_paths())
    best = int(probabilities.argmax())
    print(f"{class_names[best]}\t{probabilities[best]:.4f}")
    detail = ", ".join(f"{name} {p:.4f}" for name, p in zip(class_names, probabilities, strict=True))
    print(f"({args.variant}: {detail})", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)

"""Classify text with a trained variant: `python -m tools.predict --variant relu "a review"`.

IMDB variants take review text, tokenized exactly as in training; order-task variants take a symbol
string such as "EabXcd...YabB". Paths come from dvc.yaml's `vars` (the pipeline's single source of paths).
"""

from __future__ import annotations

import argparse
import sys

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.core.pipeline import workspace_paths
from rnnlab.runtime import environment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("text", help="review text (IMDB variants) or symbol string (order variants)")
    args = parser.parse_args(argv)
    params = load_params()
    environment.configure(params.runtime)
    from rnnlab.evaluation.inference import predict_text  # loads torch: after configure

    class_names, probabilities = predict_text(params, args.variant, args.text, workspace_paths())
    best = int(probabilities.argmax())
    print(f"{class_names[best]}\t{probabilities[best]:.4f}")
    detail = ", ".join(f"{name} {p:.4f}" for name, p in zip(class_names, probabilities))
    print(f"({args.variant}: {detail})", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)

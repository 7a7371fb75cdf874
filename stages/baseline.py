"""Stage `baseline`: TF-IDF + logistic regression on the same inputs the recurrent models see (rnnlab/evaluation/baseline.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.runtime import environment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True, help="declared metrics JSON: accuracy, f1, roc_auc, loss")
    parser.add_argument("--details", type=Path, required=True, help="every value computed (confusion, environment...)")
    parser.add_argument("--predictions", type=Path, required=True, help="per-example CSV: actual, predicted, p_<class>")
    parser.add_argument("--timings", type=Path, help="machine-dependent timings JSON to write (not a DVC output)")
    args = parser.parse_args(argv)
    params = load_params()
    environment.configure(params.runtime)  # numpy's OpenBLAS reads its kernel pin when it loads
    from rnnlab.evaluation.baseline import run_baseline  # loads numpy and torch: after configure
    from rnnlab.evaluation.metrics import EvaluationOutputs

    run_baseline(
        params.baseline, args.data, EvaluationOutputs(args.metrics, args.details, args.predictions, timings=args.timings)
    )


if __name__ == "__main__":
    run_cli(main)

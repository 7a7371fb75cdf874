"""Stage `evaluate@<variant>`: test-set metrics for one trained variant, the same keys for all (rnnlab/evaluation/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.runtime import environment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="a variant of params.yaml (either task)")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument(
        "--metrics", type=Path, required=True, help="declared metrics JSON: accuracy, f1, roc_auc, loss, best_epoch"
    )
    parser.add_argument("--details", type=Path, required=True, help="every value computed (confusion, environment, gradient...)")
    parser.add_argument("--predictions", type=Path, required=True, help="per-example CSV: actual, predicted, p_<class>")
    parser.add_argument("--timings", type=Path, help="machine-dependent timings JSON to update (not a DVC output)")
    parser.add_argument("--gradients", type=Path, help="plots JSON: log10 ||dL/dx_t|| by steps back")
    args = parser.parse_args(argv)
    params = load_params()
    variant = params.find_variant(args.variant)[1]
    environment.configure(params.runtime)
    from rnnlab.evaluation.evaluate import EvaluationOutputs, evaluate_variant  # loads torch: after configure

    outputs = EvaluationOutputs(args.metrics, args.details, args.predictions, args.gradients, args.timings)
    evaluate_variant(variant, args.data, args.model, outputs)


if __name__ == "__main__":
    run_cli(main)

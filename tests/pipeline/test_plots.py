"""dvc.yaml's top-level `plots:` list every variant by name (DVC has no foreach there): a variant
added to params.yaml without a line here would silently be missing from `dvc plots show`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rnnlab.config.params import load_params

REPO = Path(__file__).resolve().parents[2]
# (folder variable, the file of one variant under it, the top-level plot ids per study that must hold it)
EXPECTED = (
    ("live", "{variant}/plots/metrics/valid_accuracy.tsv", ("valid_accuracy",)),  # DVCLive's layout
    ("live", "{variant}/plots/metrics/train_loss.tsv", ("train_loss",)),
    ("live", "{variant}/plots/metrics/grad_norm_mean.tsv", ("grad_norm",)),
    ("gradients", "{variant}.json", ("gradient_through_time",)),
    ("predictions", "{variant}.csv", ("confusion",)),
)


def folder_of(folder: str, study: str) -> str:
    """The order study's gradient profiles live in their own folder (gradient_figure depends on it)."""
    return "order_gradients" if (folder, study) == ("gradients", "order") else folder


def dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


def resolve(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda match: variables[match.group(1)], text)


def top_level_plot_files() -> dict[str, set[str]]:
    """plot id -> the files it draws, with ${vars} resolved."""
    document = dvc_yaml()
    variables = {key: value for entry in document["vars"] for key, value in entry.items()}
    plots = {}
    for entry in document["plots"]:
        ((plot_id, definition),) = entry.items()
        plots[plot_id] = {resolve(path, variables) for path in definition["y"]}
    return plots


def variant_names() -> dict[str, list[str]]:
    params = load_params(REPO / "params.yaml")
    return {name: list(study.variants) for name, study in params.tasks.items()}


@pytest.mark.parametrize(("folder", "file", "plot_kinds"), EXPECTED)
def test_every_variant_is_drawn(folder: str, file: str, plot_kinds: tuple[str, ...]) -> None:
    variables = {key: value for entry in dvc_yaml()["vars"] for key, value in entry.items()}
    plots = top_level_plot_files()
    for study, variants in variant_names().items():
        for kind in plot_kinds:
            plot_id = f"{study}_{kind}"
            assert plot_id in plots, f"dvc.yaml top-level plots lack '{plot_id}'"
            expected = {f"{variables[folder_of(folder, study)]}/{file.format(variant=variant)}" for variant in variants}
            # A superset is fine: e.g. the linear baseline's confusion matrix may sit beside the variants.
            missing = expected - plots[plot_id]
            assert not missing, f"{plot_id} in dvc.yaml lacks {sorted(missing)}: list every params.yaml variant"


def test_gradient_figure_depends_on_every_order_profile() -> None:
    """The figure depends on the order profiles' folder, which holds exactly the order variants' files."""
    document = dvc_yaml()
    variables = {key: value for entry in document["vars"] for key, value in entry.items()}
    deps = {resolve(dep, variables) for dep in document["stages"]["gradient_figure"]["deps"]}
    assert variables["order_gradients"] in deps
    order_stage = document["stages"]["order_evaluate"]["do"]
    outs = {resolve(next(iter(out)) if isinstance(out, dict) else out, variables | {"key": "KEY"}) for out in order_stage["outs"]}
    assert f"{variables['order_gradients']}/KEY.json" in outs
    imdb_stage = document["stages"]["evaluate"]["do"]
    assert variables["order_gradients"] not in imdb_stage["cmd"]  # no IMDB output lands in the figure's folder


def test_history_plots_read_what_the_train_stage_logs() -> None:
    """Each history plot's y field is a metric the train stage logs, in the file DVCLive writes it to."""
    from rnnlab.training.history import HISTORY_METRICS, metric_file

    variables = {key: value for entry in dvc_yaml()["vars"] for key, value in entry.items()}
    for entry in dvc_yaml()["plots"]:
        ((plot_id, definition),) = entry.items()
        for path, field in definition["y"].items():
            if resolve(path, variables).startswith(variables["live"] + "/"):
                variant = resolve(path, variables).removeprefix(variables["live"] + "/").split("/")[0]
                assert field in HISTORY_METRICS, plot_id
                assert resolve(path, variables) == str(metric_file(f"{variables['live']}/{variant}", field)), plot_id
                assert definition["x"] == "step", plot_id  # DVCLive's column for the epoch

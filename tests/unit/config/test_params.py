"""Unit tests for params.yaml parsing and for dvc.yaml declaring exactly the params each stage reads."""

from __future__ import annotations

import ast
import copy
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from rnnlab.config.params import (
    PREPROCESS_KEYS,
    XY_KEYS,
    DataConfig,
    DownloadConfig,
    load_params,
    parse_params,
    read_params_file,
    read_variant,
    resolved_files,
    write_resolved,
)
from rnnlab.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def raw_params() -> dict[str, Any]:
    return read_params_file(ROOT / "params.yaml")


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A copy of params.yaml with the dotted key `path` set to `value`."""
    raw = copy.deepcopy(raw_params())
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return raw


def test_params_yaml_parses_with_the_documented_defaults() -> None:
    params = load_params(ROOT / "params.yaml")
    imdb = params.task("imdb")
    assert set(imdb.variants) == {"relu", "sigmoid", "tanh", "leaky_relu"}
    assert {name: variant.model.activation for name, variant in imdb.variants.items()} == {
        "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "leaky_relu": "leaky_relu",
    }
    assert (imdb.model.embedding_dim, imdb.model.hidden_size, imdb.model.head_size) == (128, 256, 256)
    assert (imdb.train.batch_size, imdb.train.lr, imdb.train.epochs) == (100, 1e-4, 5)
    assert params.data == DataConfig()  # params.yaml repeats the code defaults for data
    assert set(params.task("order").variants) == {"order_rnn", "order_lstm", "order_gru",
                                                   "order_rnn_fix", "order_lstm_fix", "order_gru_fix"}


def test_variant_overrides_only_its_keys() -> None:
    params = parse_params(with_change("variants", {"deep": {"model": {"num_layers": 2}, "train": {"lr": 0.5}}}))
    variant = params.task("imdb").variants["deep"]
    base = params.task("imdb")
    assert variant.model.num_layers == 2 and variant.train.lr == 0.5
    assert variant.model.hidden_size == base.model.hidden_size and variant.train.epochs == base.train.epochs


def test_misspelled_cell_suggests_the_choice_and_lists_all() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params(with_change("model.cell", "lsmt"))
    message = str(caught.value)
    assert "model.cell" in message and "Did you mean 'lstm'" in message
    assert "rnn, lstm, gru" in message


def test_misspelled_truncate_mode_suggests_the_choice() -> None:
    with pytest.raises(ConfigError, match=r"data\.truncate.*Did you mean 'head_tail'.*head, tail, head_tail"):
        parse_params(with_change("data.truncate", "headtail"))


def test_invalid_choice_in_a_variant_names_the_variant() -> None:
    with pytest.raises(ConfigError, match=r"variants\.relu\.model\.activation.*Did you mean 'relu'"):
        parse_params(with_change("variants.relu.model.activation", "relux"))


@pytest.mark.parametrize(
    "path,value,pattern",
    [
        ("modle", {}, r"Unknown key 'modle'.*Did you mean 'model'"),
        ("model.hiden_size", 8, r"Unknown key 'model\.hiden_size'.*Did you mean 'hidden_size'"),
        ("data.fixlength", 8, r"Unknown key 'data\.fixlength'"),
        ("order.modle", {}, r"Unknown key 'order\.modle'"),
        ("variants.relu.modle", {}, r"Unknown key 'variants\.relu\.modle'"),
        ("variants.relu.model.hiden_size", 8, r"variants\.relu\.model\.hiden_size.*Did you mean 'hidden_size'"),
        ("order.variants.order_rnn.train.epoch", 2, r"order\.variants\.order_rnn\.train\.epoch.*Did you mean 'epochs'"),
    ],
)
def test_unknown_keys_fail_at_every_level(path: str, value: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse_params(with_change(path, value))


@pytest.mark.parametrize(
    "path,value,pattern",
    [
        ("model.hidden_size", "256", "model.hidden_size must be an integer"),
        ("model.hidden_size", 2.5, "model.hidden_size must be an integer"),
        ("model.bidirectional", "yes", "model.bidirectional must be true or false"),
        ("model.bidirectional", 1, "model.bidirectional must be true or false"),
        ("train.epochs", True, "train.epochs must be an integer"),
        ("train.lr", "fast", "train.lr must be a number"),
        ("model.cell", 3, "model.cell must be a string"),
        ("order.data.early_window", [10], "order.data.early_window must be a list of two integers"),
        ("data", [1, 2], "data must be a mapping"),
    ],
)
def test_wrong_types_fail(path: str, value: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse_params(with_change(path, value))


@pytest.mark.parametrize(
    "path,value,pattern",
    [
        ("data.valid_ratio", 1.0, "valid_ratio must be in"),
        ("model.dropout", 1.0, "dropout must be in"),
        ("model.word_dropout", 1.0, "model.word_dropout must be in"),
        ("model.head_size", -1, "head_size must be >= 0"),
        ("train.device", "gpu", "Valid choices: auto, cpu, cuda, mps"),
        ("download.md5", "XYZ", "md5 must be 32 lowercase hex digits"),
    ],
)
def test_out_of_range_values_fail(path: str, value: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse_params(with_change(path, value))


def test_integer_learning_rate_is_read_as_float() -> None:
    assert parse_params(with_change("train.lr", 1)).task("imdb").train.lr == 1.0


def test_variant_names_are_unique_across_studies() -> None:
    raw = with_change("order.variants.relu", {"model": {"cell": "gru"}})
    with pytest.raises(ConfigError, match="unique across tasks"):
        parse_params(raw)


# --- each stage's resolved params hold exactly the values it reads ------------------------------


def resolved() -> dict[str, dict[str, Any]]:
    return resolved_files(load_params(ROOT / "params.yaml"))


def config_attributes_read(module_file: str) -> set[str]:
    """Names `x` of every `config.x` read in the library module a stage calls (it names its section `config`)."""
    tree = ast.parse((ROOT / module_file).read_text(encoding="utf-8"))
    return {
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "config"
    }


def field_names(section: type) -> set[str]:
    return {item.name for item in fields(section)}


def test_download_gets_every_download_field_and_reads_them() -> None:
    assert set(resolved()["download.json"]["download"]) == field_names(DownloadConfig)
    assert config_attributes_read("rnnlab/text/fetch.py") == field_names(DownloadConfig)


def test_preprocess_gets_the_data_fields_except_the_xy_ones() -> None:
    expected = field_names(DataConfig) - set(XY_KEYS)
    assert set(resolved()["preprocess.json"]["data"]) == expected == set(PREPROCESS_KEYS)
    assert config_attributes_read("rnnlab/text/prepare.py") == expected


def test_xy_gets_only_its_three_keys() -> None:
    assert set(resolved()["xy.json"]["data"]) == set(XY_KEYS) == {"fix_length", "truncate", "pad"}
    assert config_attributes_read("rnnlab/text/encode.py") == set(XY_KEYS)


def test_each_variant_file_is_its_resolved_config_with_the_runtime() -> None:
    files, params = resolved(), load_params(ROOT / "params.yaml")
    for task in params.tasks.values():
        for name, variant in task.variants.items():
            content = files[f"variants/{name}.json"]
            assert content["model"] == variant.model.to_dict() and content["train"] == variant.train.to_dict()
            assert content["runtime"] == params.runtime.to_dict()
            assert content["variant"] == {"name": name, "task": task.name, "overrides": sorted(variant.overrides)}
        assert files[f"tasks/{task.name}.json"] == {"task": {"name": task.name, "variants": list(task.variants)}}
    assert set(files["baseline.json"]) == {"baseline", "runtime"}


def test_a_resolved_file_reads_back_as_the_params_gave_it(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    write_resolved(params, tmp_path)
    for task in params.tasks.values():
        for name, variant in task.variants.items():
            assert read_variant(tmp_path / "variants" / f"{name}.json") == (variant, params.runtime)


def test_a_variant_knows_where_each_of_its_values_is_set() -> None:
    params = parse_params(with_change("variants.relu.model.hidden_size", 64))
    relu, order_rnn = params.find_variant("relu")[1], params.find_variant("order_rnn")[1]
    assert relu.params_key("model", "hidden_size") == "variants.relu.model.hidden_size"
    assert relu.params_key("train", "lr") == "train.lr"
    assert order_rnn.params_key("model", "cell") == "order.variants.order_rnn.model.cell"
    assert order_rnn.params_key("train", "lr") == "order.train.lr"


def test_foreach_stages_cover_every_variant() -> None:
    # dvc's own resolution of foreach, so an edit to either file that drops a variant fails here.
    from dvc.repo import Repo

    params = load_params(ROOT / "params.yaml")
    with Repo(str(ROOT)) as repo:
        # load_file reads only dvc.yaml (no workspace walk through a CI virtualenv).
        names = {stage.addressing for stage in repo.stage.load_file(str(ROOT / "dvc.yaml"))}
    for study, stage_names in (("imdb", ("train", "evaluate")), ("order", ("order_train", "order_evaluate"))):
        variants = set(params.task(study).variants)
        assert variants
        for stage_name in stage_names:
            expanded = {name.split("@", 1)[1] for name in names if name.startswith(f"{stage_name}@")}
            assert expanded == variants, stage_name


def alias_bomb(levels: int = 9) -> str:
    """Nested YAML aliases in one flow list: level k holds level k-1 and eight aliases of it, so the
    outer list stands for 9**levels strings."""
    inner = "&l0 [x, x, x, x, x, x, x, x, x]"
    for level in range(1, levels):
        inner = f"&l{level} [{inner}, {', '.join([f'*l{level - 1}'] * 8)}]"
    return inner


@pytest.mark.parametrize("where", ["model.lower_layer_sizes", "bomb"])
def test_an_alias_bomb_is_answered_in_one_line_at_once(tmp_path: Path, where: str) -> None:
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    if where == "bomb":
        text = f"bomb: {alias_bomb()}\n{text}"
    else:
        text = text.replace("  lower_layer_sizes: []", f"  lower_layer_sizes: {alias_bomb()}", 1)
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as raised:
        load_params(tmp_path / "params.yaml")
    assert time.perf_counter() - started < 5  # about 20 minutes when every alias was walked again
    message = str(raised.value)
    assert "\n" not in message and len(message) < 300 and where in message

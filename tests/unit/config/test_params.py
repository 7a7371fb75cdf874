"""Unit tests for params.yaml parsing and for dvc.yaml declaring exactly the params each stage reads."""

from __future__ import annotations

import ast
import copy
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from rnnlab.config.params import DataConfig, DownloadConfig, load_params, parse_params, read_params_file
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


# --- dvc.yaml lists exactly the params.yaml keys each stage reads ---------------------------------


def listed(stage: str) -> set[str]:
    """The params.yaml keys dvc.yaml lists for `stage`."""
    return set(yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"][stage]["params"])


def config_attributes_read(module_file: str) -> set[str]:
    """Names `x` of every `config.x` read in the library module a stage calls (it names its section `config`)."""
    tree = ast.parse((ROOT / module_file).read_text(encoding="utf-8"))
    return {
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "config"
    }


def field_names(section: type) -> set[str]:
    return {item.name for item in fields(section)}


def test_download_lists_its_section_and_reads_every_field() -> None:
    assert listed("download") == {"download"}
    assert config_attributes_read("rnnlab/text/fetch.py") == field_names(DownloadConfig)


def test_preprocess_and_xy_list_the_data_keys_they_read_and_share_none() -> None:
    preprocess, xy = config_attributes_read("rnnlab/text/prepare.py"), config_attributes_read("rnnlab/text/encode.py")
    assert listed("preprocess") == {f"data.{key}" for key in preprocess}
    assert listed("xy") == {f"data.{key}" for key in xy} == {"data.fix_length", "data.truncate", "data.pad"}
    assert preprocess | xy == field_names(DataConfig) and not preprocess & xy


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

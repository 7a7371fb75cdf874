"""Unit tests for the report stage, the predict CLI and the baseline's input encoding."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from rnnlab.config.params import ModelConfig
from rnnlab.core.errors import UserError
from rnnlab.core.files import workspace_paths
from rnnlab.data.arrays import Split
from rnnlab.evaluation import inference
from rnnlab.evaluation.baseline import documents
from rnnlab.model.classifier import ModelSpec, build_model, save_checkpoint
from rnnlab.reporting import results as report
from rnnlab.text.vocab import read_vocab, write_vocab
from tests.support.stage_runner import assert_user_error, run_stage
from tests.unit.model.test_checkpoint import DAMAGES, damage_checkpoint
from tools import predict

ROOT = Path(__file__).resolve().parents[2]


def metrics_row(variant: str, accuracy: float | None, study: str = "imdb") -> dict:
    return {"variant": variant, "study": study, "cell": "rnn", "accuracy": accuracy, "f1": 0.5, "roc_auc": None,
            "best_valid_accuracy": 0.5, "parameters": 1000, "seed": 0, "diverged": False,
            "environment": {"reproducible": True, "cpu_capability": "AVX2", "torch": "2.13.0", "device": "cpu"}}


def test_report_sorts_by_accuracy_and_separates_studies(tmp_path: Path) -> None:
    (tmp_path / "details").mkdir()
    for row in (metrics_row("low", 0.5), metrics_row("high", 0.9), metrics_row("order_rnn", 0.25, "order")):
        (tmp_path / f"{row['variant']}.json").write_text(json.dumps({"accuracy": row["accuracy"]}))
        (tmp_path / "details" / f"{row['variant']}.json").write_text(json.dumps(row))
    text = report.render(report.read_metrics(tmp_path, tmp_path / "details"))
    imdb, order = text.split("## Temporal-order task")
    assert imdb.index("| high |") < imdb.index("| low |")
    assert "order_rnn" in order and "order_rnn" not in imdb
    assert "| – |" in text  # a missing ROC-AUC is shown as a dash, not "None"
    assert "| cpu, AVX2, torch 2.13.0, reproducible |" in text


def test_report_names_missing_details(tmp_path: Path) -> None:
    (tmp_path / "details").mkdir()
    (tmp_path / "relu.json").write_text(json.dumps({"accuracy": 0.9}))
    with pytest.raises(UserError, match=r"details of relu not found at .*relu.json. Rerun its stage \(`dvc repro`\)"):
        report.read_metrics(tmp_path, tmp_path / "details")


def test_report_without_metrics_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dvc repro"):
        report.read_metrics(tmp_path, tmp_path / "details")


def test_baseline_documents_drop_padding() -> None:
    split = Split(x=torch.tensor([[5, 6, 1, 1], [7, 1, 1, 1]]), lengths=torch.tensor([2, 1]), y=torch.tensor([0, 1]))
    assert documents(split) == ["5 6", "7"]


TINY_MODEL = {"embedding_dim": 4, "hidden_size": 4, "head_size": 4}


def write_tiny_params(directory: Path, members: int = 1, **data: Any) -> None:
    """The repository's params.yaml with the tiny model the fixture's checkpoint has, 10 steps per review."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["model"] = {**params["model"], **TINY_MODEL, "members": members}
    params["data"] = {**params["data"], "fix_length": 10, **data}
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


@pytest.fixture(params=[1, 3], ids=["single", "ensemble"])
def predict_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A repo root with params.yaml, dvc.yaml, a vocabulary and a tiny trained-shape checkpoint
    (one network, or a `model.members=3` ensemble) that fits them."""
    write_tiny_params(tmp_path, members=request.param)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    paths = workspace_paths()
    write_vocab(Path(paths["vocab"]), [("great", 5), ("awful", 4)])
    config = ModelConfig(**TINY_MODEL, members=request.param)
    torch.manual_seed(0)
    model = build_model(ModelSpec(config, input_size=4, num_classes=2, sequence_length=10, class_names=("neg", "pos")))
    save_checkpoint(Path(paths["models"]) / "relu.pt", model, model.state_dict(), {"variant": "relu"})
    return tmp_path


def test_predict_prints_label_and_probability(predict_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    predict.main(["--variant", "relu", "A GREAT film, truly great!"])
    label, probability = capsys.readouterr().out.strip().split("\t")
    assert label in ("neg", "pos") and 0.5 <= float(probability) <= 1.0


@pytest.mark.parametrize("text", ["", "   ", "?!... ---"])
def test_predict_rejects_text_without_words(predict_repo: Path, text: str) -> None:
    with pytest.raises(UserError, match="no words"):
        predict.main(["--variant", "relu", text])


@pytest.mark.parametrize(("truncate", "kept"), [("head", ["great", "<unk>"]), ("tail", ["<unk>", "awful"]), ("head_tail", ["great", "awful"])])
def test_predict_truncates_like_the_xy_stage(predict_repo: Path, truncate: str, kept: list[str]) -> None:
    vocab = Path(workspace_paths()["vocab"])
    names = read_vocab(vocab)
    ids = inference.encode_review("Great plot; awful!", names, length=2, truncate=truncate)
    assert [names[token_id] for token_id in ids] == kept


def test_predict_unknown_variant_suggests_a_name(predict_repo: Path) -> None:
    with pytest.raises(Exception, match="Did you mean 'relu'"):
        predict.main(["--variant", "rellu", "great"])


def test_predict_order_input_is_validated() -> None:
    assert inference.encode_symbols("EaXbYB", 10) == [1, 3, 7, 4, 8, 2]
    with pytest.raises(UserError, match="invalid symbols"):
        inference.encode_symbols("EazB", 10)
    with pytest.raises(UserError, match="at most 3"):
        inference.encode_symbols("EaaaB", 3)


# --- issue 25: a checkpoint that does not fit its data, and long reviews -------------------------


def run_predict(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_stage("tools.predict", argv, capsys)


@pytest.mark.parametrize("tokens", [[("great", 5)], [("great", 5), ("awful", 4), ("plot", 3)]], ids=["smaller", "larger"])
def test_predict_refuses_a_checkpoint_trained_on_another_vocabulary(predict_repo: Path, capsys: pytest.CaptureFixture[str],
                                                                    tokens: list[tuple[str, int]]) -> None:
    """The issue: after `data.vocab_size: 20` and `dvc repro xy`, a silently different probability (smaller
    vocabulary) or an IndexError traceback (larger). The checkpoint knows its input size."""
    write_vocab(Path(workspace_paths()["vocab"]), tokens)
    code, out, err = run_predict(["--variant", "relu", "great film"], capsys)
    assert_user_error(code, err, f"models/relu.pt was trained on 4 input tokens but data/vocab.tsv has {len(tokens) + 2}",
                      "the vocabulary changed after training", "Retrain it with `dvc repro`", "`dvc checkout`")
    assert out == ""


def test_predict_refuses_a_checkpoint_of_another_cell(predict_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    params["model"]["cell"] = "lstm"
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    code, _out, err = run_predict(["--variant", "relu", "great film"], capsys)
    assert_user_error(code, err, "models/relu.pt was trained with a different model config", "cell: checkpoint 'rnn' vs params 'lstm'",
                      "dvc repro")


def test_predict_refuses_a_checkpoint_of_another_length(predict_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny_params(predict_repo, members=torch.load("models/relu.pt", weights_only=True)["config"]["model"].get("members", 1),
                      fix_length=30)
    code, _out, err = run_predict(["--variant", "relu", "great film"], capsys)
    assert_user_error(code, err, "models/relu.pt was trained on sequences of 10 steps (post-padded) but params.yaml says "
                                 "data.fix_length=30 (post-padded)", "dvc repro")


def test_predict_reads_a_file_or_stdin_like_the_argument(predict_repo: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    text = "A GREAT film, truly great! Awful ending."
    (predict_repo / "review.txt").write_text(text, encoding="utf-8")
    outputs = [run_predict(["--variant", "relu", text], capsys), run_predict(["--variant", "relu", "--file", "review.txt"], capsys)]
    for argv in (["--variant", "relu", "-"], ["--variant", "relu", "--file", "-"]):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))
        outputs.append(run_predict(argv, capsys))
    assert outputs[0][0] == 0 and all(output == outputs[0] for output in outputs), outputs


def test_predict_classifies_a_review_of_a_million_tokens_from_a_file(predict_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue: a million tokens in the argument fail with "Argument list too long"; from a file they fit."""
    (predict_repo / "long.txt").write_text("great awful plot " * 333_334, encoding="utf-8")  # 1,000,002 tokens, 5.7 MB
    code, out, err = run_predict(["--variant", "relu", "--file", "long.txt"], capsys)
    assert code == 0, err
    assert out.split("\t")[0] in ("neg", "pos")


def test_predict_refuses_a_file_past_the_pipelines_review_limit(predict_repo: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rnnlab.text.archive.REVIEW_BYTES", 1000)
    (predict_repo / "huge.txt").write_text("great " * 1000, encoding="utf-8")
    code, _out, err = run_predict(["--variant", "relu", "--file", "huge.txt"], capsys)
    assert_user_error(code, err, "huge.txt is longer than 1.0 KiB",
                      "the longest review this pipeline reads (REVIEW_BYTES in rnnlab/text/archive.py", "Classify a shorter text.")


def test_predict_input_errors_are_one_line(predict_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_predict(["--variant", "relu", "--file", "missing.txt"], capsys)
    assert_user_error(code, err, "cannot read the review from missing.txt: No such file or directory")
    with pytest.raises(SystemExit) as exited:  # argparse: both, or neither
        predict.main(["--variant", "relu", "text", "--file", "review.txt"])
    assert exited.value.code == 2 and "give the text, or --file FILE" in capsys.readouterr().err


@pytest.mark.parametrize("damage", DAMAGES)
def test_predict_refuses_a_damaged_checkpoint_in_one_line(predict_repo: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    damage_checkpoint(predict_repo / "models/relu.pt", damage)
    code, out, _err = run_predict(["--variant", "relu", "great film"], capsys)
    assert_user_error(code, _err, "models/relu.pt", "dvc repro")
    assert out == ""

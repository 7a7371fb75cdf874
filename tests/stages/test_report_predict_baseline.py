"""Unit tests for the report stage, the predict CLI and the baseline's input encoding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rnnlab.config.sections import ModelConfig
from rnnlab.core.errors import UserError
from rnnlab.core.pipeline import workspace_paths
from rnnlab.data.arrays import Split
from rnnlab.evaluation import inference
from rnnlab.evaluation.baseline import documents
from rnnlab.model.checkpoint import save_checkpoint
from rnnlab.model.classifier import build_model
from rnnlab.model.spec import ModelSpec
from rnnlab.reporting import results as report
from rnnlab.text.vocab import read_vocab, write_vocab
from tools import predict

ROOT = Path(__file__).resolve().parents[2]


def metrics_row(variant: str, accuracy: float | None, study: str = "imdb") -> dict:
    return {"variant": variant, "study": study, "cell": "rnn", "accuracy": accuracy, "f1": 0.5, "roc_auc": None,
            "best_valid_accuracy": 0.5, "parameters": 1000, "seed": 0, "diverged": False,
            "environment": {"reproducible": True, "cpu_capability": "AVX2", "torch": "2.13.0", "device": "cpu"}}


def test_report_sorts_by_accuracy_and_separates_studies(tmp_path: Path) -> None:
    for row in (metrics_row("low", 0.5), metrics_row("high", 0.9), metrics_row("order_rnn", 0.25, "order")):
        (tmp_path / f"{row['variant']}.json").write_text(json.dumps(row))
    text = report.render(report.read_metrics(tmp_path))
    imdb, order = text.split("## Temporal-order task")
    assert imdb.index("| high |") < imdb.index("| low |")
    assert "order_rnn" in order and "order_rnn" not in imdb
    assert "| – |" in text  # a missing ROC-AUC is shown as a dash, not "None"
    assert "| cpu, AVX2, torch 2.13.0, reproducible |" in text


def test_report_without_metrics_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dvc repro"):
        report.read_metrics(tmp_path)


def test_baseline_documents_drop_padding() -> None:
    split = Split(x=torch.tensor([[5, 6, 1, 1], [7, 1, 1, 1]]), lengths=torch.tensor([2, 1]), y=torch.tensor([0, 1]))
    assert documents(split) == ["5 6", "7"]


@pytest.fixture(params=[1, 3], ids=["single", "ensemble"])
def predict_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A repo root with params.yaml, dvc.yaml, a vocabulary and a tiny trained-shape checkpoint
    (one network, or a `model.members=3` ensemble)."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    paths = workspace_paths()
    write_vocab(Path(paths["vocab"]), [("great", 5), ("awful", 4)])
    config = ModelConfig(embedding_dim=4, hidden_size=4, head_size=4, members=request.param)
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
    ids = inference.encode_review("Great plot; awful!", vocab, length=2, truncate=truncate)
    names = read_vocab(vocab)
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

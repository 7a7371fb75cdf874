"""Classify text with a trained variant: `python -m stages.predict --variant relu "a review"`.

Paths come from dvc.yaml's `vars` (the pipeline's single source of paths). IMDB variants take
review text, tokenized exactly as in training; order-task variants take a symbol string such as
"EabXcd...YabB".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from stages.common import StageError, run_cli
from stages.config import ORDER_STUDY, load_params
from stages.model import Classifier, load_checkpoint
from stages.order_data import INDEX as ORDER_INDEX
from stages.preprocess import PAD, UNK, read_vocab, tokenize
from stages.xy import kept_tokens

PIPELINE_FILE = Path("dvc.yaml")


def pipeline_paths() -> dict[str, str]:
    if not PIPELINE_FILE.is_file():
        raise StageError("dvc.yaml not found: run predict from the repository root.")
    variables = yaml.safe_load(PIPELINE_FILE.read_text(encoding="utf-8")).get("vars", [])
    return {key: value for entry in variables if isinstance(entry, dict) for key, value in entry.items()}


def encode_review(text: str, vocab_path: Path, length: int, truncate: str = "head") -> list[int]:
    """Token ids as the xy stage makes them: tokenized, truncated by `data.truncate`, unknown -> <unk>."""
    tokens = tokenize(text)
    if not tokens:
        raise StageError("The text has no words after preprocessing (empty, or punctuation only); give a review to classify.")
    index = {token: position for position, token in enumerate(read_vocab(vocab_path))}
    return [index.get(token, index[UNK]) for token in kept_tokens(tokens, length, truncate)]


def encode_symbols(text: str, length: int) -> list[int]:
    symbols = text.strip()
    unknown = sorted({symbol for symbol in symbols if symbol not in ORDER_INDEX or symbol == "<"})
    if not symbols or unknown:
        raise StageError(f"Order-task input must be a string over E, B, a, b, c, d, X, Y (got invalid symbols {unknown or 'none: empty'}).")
    if len(symbols) > length:
        raise StageError(f"Order-task input has {len(symbols)} symbols; the model was trained on at most {length}.")
    return [ORDER_INDEX[symbol] for symbol in symbols]


def classify(model: Classifier, ids: list[int], pad_index: int) -> np.ndarray:
    length = model.spec.sequence_length
    tokens = torch.full((1, length), pad_index, dtype=torch.long)
    tokens[0, : len(ids)] = torch.tensor(ids)
    model.eval()
    with torch.no_grad():
        return model(tokens, torch.tensor([len(ids)])).softmax(dim=1)[0].numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("text", help="review text (IMDB variants) or symbol string (order variants)")
    args = parser.parse_args(argv)
    params = load_params()
    study, variant = params.find_variant(args.variant)
    paths = pipeline_paths()
    model, _checkpoint = load_checkpoint(Path(paths["models"]) / f"{variant.name}.pt")
    length = model.spec.sequence_length
    if study.name == ORDER_STUDY:
        ids, pad_index = encode_symbols(args.text, length), ORDER_INDEX["<pad>"]
    else:
        vocab_path = Path(paths["vocab"])
        ids, pad_index = encode_review(args.text, vocab_path, length, params.data.truncate), read_vocab(vocab_path).index(PAD)
    probabilities = classify(model, ids, pad_index)
    best = int(probabilities.argmax())
    print(f"{model.spec.class_names[best]}\t{probabilities[best]:.4f}")
    detail = ", ".join(f"{name} {p:.4f}" for name, p in zip(model.spec.class_names, probabilities))
    print(f"({args.variant}: {detail})", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)

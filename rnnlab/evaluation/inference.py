"""Classify new text with a trained checkpoint, encoded exactly as the pipeline encoded its training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rnnlab.config.params import ORDER_TASK, Params
from rnnlab.core.errors import UserError
from rnnlab.model.checkpoint import load_checkpoint
from rnnlab.model.classifier import Classifier
from rnnlab.order_task.generate import INDEX as ORDER_INDEX
from rnnlab.text.encode import kept_tokens
from rnnlab.text.tokenize import PAD, UNK, tokenize
from rnnlab.text.vocab import read_vocab


def encode_review(text: str, vocab_path: Path, length: int, truncate: str = "head") -> list[int]:
    """Token ids as the xy stage makes them: tokenized, truncated by `data.truncate`, unknown -> <unk>."""
    tokens = tokenize(text)
    if not tokens:
        raise UserError("The text has no words after preprocessing (empty, or punctuation only); give a review to classify.")
    index = {token: position for position, token in enumerate(read_vocab(vocab_path))}
    return [index.get(token, index[UNK]) for token in kept_tokens(tokens, length, truncate)]


def encode_symbols(text: str, length: int) -> list[int]:
    symbols = text.strip()
    unknown = sorted({symbol for symbol in symbols if symbol not in ORDER_INDEX or symbol == "<"})
    if not symbols or unknown:
        raise UserError(f"Order-task input must be a string over E, B, a, b, c, d, X, Y (got invalid symbols {unknown or 'none: empty'}).")
    if len(symbols) > length:
        raise UserError(f"Order-task input has {len(symbols)} symbols; the model was trained on at most {length}.")
    return [ORDER_INDEX[symbol] for symbol in symbols]


def classify(model: Classifier, ids: list[int], pad_index: int) -> np.ndarray:
    length = model.spec.sequence_length
    tokens = torch.full((1, length), pad_index, dtype=torch.long)
    tokens[0, : len(ids)] = torch.tensor(ids)
    model.eval()
    with torch.no_grad():
        return model(tokens, torch.tensor([len(ids)])).softmax(dim=1)[0].numpy()


def predict_text(params: Params, variant_name: str, text: str, paths: dict[str, str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and probabilities of `text` under the variant's checkpoint (paths: dvc.yaml's vars)."""
    task, variant = params.find_variant(variant_name)
    model, _checkpoint = load_checkpoint(Path(paths["models"]) / f"{variant.name}.pt")
    length = model.spec.sequence_length
    if task.name == ORDER_TASK:
        ids, pad_index = encode_symbols(text, length), ORDER_INDEX["<pad>"]
    else:
        vocab_path = Path(paths["vocab"])
        ids, pad_index = encode_review(text, vocab_path, length, params.data.truncate), read_vocab(vocab_path).index(PAD)
    return model.spec.class_names, classify(model, ids, pad_index)

"""Classify new text with a trained checkpoint, encoded exactly as the pipeline encoded its training data.

The checkpoint must fit the vocabulary and data params it is given: one from before `data.vocab_size` changed
would otherwise read every token id as another word (a silently different probability) or past its embedding.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from rnnlab.config.params import ORDER_TASK, Params
from rnnlab.core.errors import UserError
from rnnlab.core.memory import size_text
from rnnlab.model.classifier import load_checkpoint
from rnnlab.order_task.generate import INDEX as ORDER_INDEX
from rnnlab.order_task.generate import SYMBOLS as ORDER_SYMBOLS
from rnnlab.text.archive import REVIEW_BYTES, ArchiveLimitError, decode_review, read_review_bytes
from rnnlab.text.encode import kept_tokens
from rnnlab.text.tokenize import PAD, UNK, tokenize
from rnnlab.text.vocab import read_vocab

STDIN = "-"


def read_review(source: str) -> str:
    """The review in file `source` (stdin for "-"), refused past REVIEW_BYTES so a huge input cannot exhaust memory."""
    name = "standard input" if source == STDIN else source
    try:
        with nullcontext(sys.stdin.buffer) if source == STDIN else Path(source).open("rb") as handle:
            raw = read_review_bytes(handle, name)
    except ArchiveLimitError as error:
        raise UserError(f"{error}. Classify a shorter text.") from error
    except OSError as error:
        raise UserError(
            f"cannot read the review from {name}: {error.strerror or error}. Give a readable file, or - for stdin."
        ) from error
    return decode_review(raw, name)


def check_text_size(text: str) -> None:
    if len(text.encode("utf-8", "surrogatepass")) > REVIEW_BYTES:
        raise UserError(
            f"the review is longer than {size_text(REVIEW_BYTES)}, the longest review this pipeline reads "
            f"(REVIEW_BYTES in rnnlab/text/archive.py). Classify a shorter text."
        )


def encode_review(text: str, vocab: list[str], length: int, truncate: str = "head") -> list[int]:
    """Token ids as the xy stage makes them: tokenized, truncated by `data.truncate`, unknown -> <unk>."""
    tokens = tokenize(text)
    if not tokens:
        raise UserError("The text has no words after preprocessing (empty, or punctuation only); give a review to classify.")
    index = {token: position for position, token in enumerate(vocab)}
    return [index.get(token, index[UNK]) for token in kept_tokens(tokens, length, truncate)]


def encode_symbols(text: str, length: int) -> list[int]:
    symbols = text.strip()
    unknown = sorted({symbol for symbol in symbols if symbol not in ORDER_INDEX or symbol == "<"})
    if not symbols or unknown:
        raise UserError(
            f"Order-task input must be a string over E, B, a, b, c, d, X, Y (got invalid symbols {unknown or 'none: empty'})."
        )
    if len(symbols) > length:
        raise UserError(f"Order-task input has {len(symbols)} symbols; the model was trained on at most {length}.")
    return [ORDER_INDEX[symbol] for symbol in symbols]


def predict_text(params: Params, variant_name: str, text: str, paths: dict[str, str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and probabilities of `text` under the variant's checkpoint (paths: dvc.yaml's vars)."""
    task, variant = params.find_variant(variant_name)
    model_path = Path(paths["models"]) / f"{variant.name}.pt"
    # Refuses a checkpoint trained under other model params (another cell, sizes...), as evaluate does.
    model, _checkpoint = load_checkpoint(model_path, expected=variant.model)
    spec = model.spec
    if task.name == ORDER_TASK:
        vocab, source = list(ORDER_SYMBOLS), "the order task's symbols"
        length, pad, length_key = params.order_data.max_length, "post", "order.data.max_length"
    else:
        vocab_path = Path(paths["vocab"])
        vocab, source = read_vocab(vocab_path), str(vocab_path)
        length, pad, length_key = params.data.fix_length, params.data.pad, "data.fix_length"
    if spec.input_size != len(vocab):
        raise UserError(
            f"{model_path} was trained on {spec.input_size} input tokens but {source} has {len(vocab)}: the vocabulary "
            f"changed after training (data.vocab_size, data.min_freq or the data). Retrain it with `dvc repro`, or "
            f"restore the vocabulary it was trained on (`dvc checkout`, or the params of that run)."
        )
    if spec.sequence_length != length or spec.pad != pad:
        raise UserError(
            f"{model_path} was trained on sequences of {spec.sequence_length} steps ({spec.pad}-padded) but params.yaml "
            f"says {length_key}={length} ({pad}-padded). Retrain it with `dvc repro`, or restore the params it was trained with."
        )
    if task.name == ORDER_TASK:
        ids = encode_symbols(text, spec.sequence_length)
    else:
        ids = encode_review(text, vocab, spec.sequence_length, params.data.truncate)
    tokens = torch.full((1, spec.sequence_length), vocab.index(PAD), dtype=torch.long)  # (1, T), post-padded
    tokens[0, : len(ids)] = torch.tensor(ids)
    model.eval()
    with torch.no_grad():
        return spec.class_names, model(tokens, torch.tensor([len(ids)])).softmax(dim=1)[0].numpy()

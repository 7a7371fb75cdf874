"""torchtext-legacy's IMDB tokenization, reproduced (torchtext is discontinued: its last release fails
to load with current torch):

    tokens = str.split(text) -> lowercase -> remove "<br" -> delete punctuation characters -> drop empty

`tokenize` does the same in whole-string C-level operations: "<br" and punctuation contain no
whitespace, so removing them before or after splitting gives identical tokens (tests check this
against the per-token reference). Punctuation is deleted from the UTF-8 bytes: string.punctuation
is ASCII and UTF-8 never uses ASCII bytes inside a multi-byte character, so this equals
str.translate's deletion at about half the cost.
"""

from __future__ import annotations

import string

UNK, PAD = "<unk>", "<pad>"
SPECIALS = (UNK, PAD)
_PUNCTUATION_BYTES = string.punctuation.encode("ascii")


def clean(text: str) -> str:
    """Lowercase, drop "<br" and punctuation; whitespace is left for the caller to split on."""
    # surrogatepass: a lone surrogate (possible from a JSON escape) round-trips instead of raising.
    encoded = text.lower().replace("<br", "").encode("utf-8", "surrogatepass")
    return encoded.translate(None, _PUNCTUATION_BYTES).decode("utf-8", "surrogatepass")


def tokenize(text: str) -> list[str]:
    return clean(text).split()


def tokenize_reference(text: str) -> list[str]:
    """The legacy per-token pipeline, kept as the executable specification of `tokenize`."""
    tokens = [token.lower() for token in text.split()]
    tokens = [token.replace("<br", "") for token in tokens]
    tokens = ["".join(char for char in token if char not in string.punctuation) for token in tokens]
    return [token for token in tokens if token]

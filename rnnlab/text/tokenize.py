"""torchtext-legacy's IMDB tokenization (torchtext no longer loads with current torch):
`str.split` -> lowercase -> remove "<br" -> delete punctuation -> drop empty tokens.

Done on the whole string at once: "<br" and punctuation hold no whitespace, so removing them before
splitting gives the same tokens (tests check it against the per-token pipeline). Punctuation is ASCII,
which UTF-8 never uses inside a multi-byte character, so deleting it from the bytes is exact and
twice as fast as str.translate.
"""

from __future__ import annotations

import string

UNK, PAD = "<unk>", "<pad>"
SPECIALS = (UNK, PAD)
_PUNCTUATION_BYTES = string.punctuation.encode("ascii")


def tokenize(text: str) -> list[str]:
    # surrogatepass: a lone surrogate (possible from a JSON escape) round-trips instead of raising.
    encoded = text.lower().replace("<br", "").encode("utf-8", "surrogatepass")
    return encoded.translate(None, _PUNCTUATION_BYTES).decode("utf-8", "surrogatepass").split()

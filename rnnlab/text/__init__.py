"""IMDB text: the archive, torchtext-legacy tokens, the vocabulary, fixed-length ids."""

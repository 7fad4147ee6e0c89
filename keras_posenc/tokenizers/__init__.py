"""WordPiece tokenizers for the tutorials: trained, saved and loaded with keras-hub."""

from keras_posenc.tokenizers.word_piece import RESERVED_TOKENS
from keras_posenc.tokenizers.word_piece import fit_word_piece_tokenizer
from keras_posenc.tokenizers.word_piece import load_tokenizer
from keras_posenc.tokenizers.word_piece import save_tokenizer

__all__ = [
    "RESERVED_TOKENS",
    "fit_word_piece_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
]

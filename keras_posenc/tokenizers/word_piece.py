"""Learns a WordPiece vocabulary from texts and saves the tokenizer beside a model.

keras-hub does the work (`compute_word_piece_vocabulary` from tensorflow-text and
`WordPieceTokenizer`); this module only fixes the conventions our models rely on:
id 0 is `[PAD]` (the models treat 0 as padding), and the reserved tokens every
tutorial needs have fixed ids.
"""

import json
import os

import keras

from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import import_keras_hub

# Ids 0-4. `[PAD]` must be 0: the models mask id 0 and the tokenizer pads with 0.
RESERVED_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]")
TOKENIZER_CONFIG_FILENAME = "tokenizer.json"


def _keras_hub():
    return import_keras_hub("The tokenizers (keras-hub and tensorflow-text)")


def fit_word_piece_tokenizer(
    texts,
    vocabulary_size,
    sequence_length=None,
    lowercase=True,
    special_tokens=(),
):
    """Learns a WordPiece vocabulary from `texts` and returns its tokenizer.

    Args:
        texts: list of str. The training texts.
        vocabulary_size: int. Largest vocabulary to learn, reserved and special
            tokens included.
        sequence_length: int or None. If set, the tokenizer pads with 0 or
            truncates every output to this length. Defaults to `None`.
        lowercase: bool. Lowercase texts before splitting. Defaults to `True`.
        special_tokens: sequence of str. Tokens kept whole when they appear in a
            text (e.g. `"#Person1#"`), appended after `RESERVED_TOKENS`.
            Defaults to `()`.

    Returns:
        A `keras_hub.tokenizers.WordPieceTokenizer` whose ids 0-4 are
        `RESERVED_TOKENS`.

    Example:

    >>> import keras_posenc
    >>> tokenizer = keras_posenc.tokenizers.fit_word_piece_tokenizer(
    ...     ["the cat sat", "the dog sat"], vocabulary_size=30)
    >>> tokenizer.id_to_token(0), tokenizer.token_to_id("[EOS]")
    ('[PAD]', 3)
    >>> tokenizer.detokenize(tokenizer.tokenize("the cat sat"))
    'the cat sat'
    """
    check_positive_int("vocabulary_size", vocabulary_size)
    if isinstance(texts, str) or not len(texts):
        raise ValueError(
            "`texts` must be a non-empty list of strings. "
            f"Received: texts={texts!r:.80}"
        )
    special_tokens = list(special_tokens)
    reserved = list(RESERVED_TOKENS) + special_tokens
    if vocabulary_size <= len(reserved):
        raise ValueError(
            f"`vocabulary_size` must exceed the {len(reserved)} reserved and "
            f"special tokens. Received: vocabulary_size={vocabulary_size}"
        )
    import tensorflow as tf

    keras_hub = _keras_hub()
    # A Python list would be read as a list of file names.
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024),
        vocabulary_size,
        lowercase=lowercase,
        reserved_tokens=reserved,
    )
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary,
        sequence_length=sequence_length,
        lowercase=lowercase,
        oov_token="[UNK]",
        special_tokens=special_tokens or None,
        special_tokens_in_strings=bool(special_tokens),
    )


def save_tokenizer(tokenizer, directory):
    """Writes `tokenizer.json` (its config) and `vocabulary.txt` to `directory`.

    Args:
        tokenizer: a keras-hub tokenizer, e.g. from `fit_word_piece_tokenizer`.
        directory: str or path-like. Created if missing.
    """
    os.makedirs(directory, exist_ok=True)
    config = keras.saving.serialize_keras_object(tokenizer)
    with open(os.path.join(directory, TOKENIZER_CONFIG_FILENAME), "w") as file:
        json.dump(config, file, indent=2)
    tokenizer.save_assets(directory)


def load_tokenizer(directory):
    """Loads a tokenizer written by `save_tokenizer`.

    Args:
        directory: str or path-like holding `tokenizer.json` and its vocabulary.

    Returns:
        The keras-hub tokenizer.
    """
    path = os.path.join(directory, TOKENIZER_CONFIG_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No tokenizer in {directory}: {TOKENIZER_CONFIG_FILENAME} is missing. "
            "Save one with `keras_posenc.tokenizers.save_tokenizer`."
        )
    _keras_hub()  # registers the keras-hub classes for deserialization
    with open(path) as file:
        tokenizer = keras.saving.deserialize_keras_object(json.load(file))
    tokenizer.load_assets(directory)
    return tokenizer

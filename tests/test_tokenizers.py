import numpy as np
import pytest
from keras import ops

import keras_posenc
from keras_posenc.tokenizers import RESERVED_TOKENS

TEXTS = [
    "#Person1#: Hello, how are you?",
    "#Person2#: I am fine, thanks. And you?",
    "The cat sat on the mat.",
    "The dog sat on the log.",
]


def test_reserved_ids_and_round_trip():
    tokenizer = keras_posenc.tokenizers.fit_word_piece_tokenizer(
        TEXTS, vocabulary_size=80
    )
    vocabulary = tokenizer.get_vocabulary()
    assert tuple(vocabulary[: len(RESERVED_TOKENS)]) == RESERVED_TOKENS
    assert len(vocabulary) <= 80
    ids = tokenizer.tokenize("the cat sat on the log.")
    assert tokenizer.detokenize(ids) == "the cat sat on the log ."


def test_special_tokens_stay_whole_and_padding_is_zero(tmp_path):
    tokenizer = keras_posenc.tokenizers.fit_word_piece_tokenizer(
        TEXTS,
        vocabulary_size=80,
        sequence_length=12,
        special_tokens=["#Person1#", "#Person2#"],
    )
    ids = np.asarray(ops.convert_to_numpy(tokenizer.tokenize("#Person1#: hello")))
    assert ids.shape == (12,)
    assert ids[0] == tokenizer.token_to_id("#Person1#") == len(RESERVED_TOKENS)
    assert ids[-1] == 0  # right-padded with [PAD]
    assert tokenizer.detokenize(ids[ids != 0]) == "#Person1# : hello"

    keras_posenc.tokenizers.save_tokenizer(tokenizer, tmp_path)
    assert (tmp_path / "vocabulary.txt").is_file()
    loaded = keras_posenc.tokenizers.load_tokenizer(tmp_path)
    assert loaded.get_vocabulary() == tokenizer.get_vocabulary()
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded.tokenize("#Person1#: hello")), ids
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"texts": TEXTS, "vocabulary_size": 0}, "vocabulary_size"),
        ({"texts": TEXTS, "vocabulary_size": 5}, "vocabulary_size"),
        ({"texts": [], "vocabulary_size": 50}, "texts"),
        ({"texts": "one string", "vocabulary_size": 50}, "texts"),
    ],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        keras_posenc.tokenizers.fit_word_piece_tokenizer(**kwargs)


def test_missing_tokenizer_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        keras_posenc.tokenizers.load_tokenizer(tmp_path)

"""`keras_posenc.preprocessing.readable_text` and the generators' text."""

import numpy as np
import pytest
import tensorflow as tf

import keras_posenc
from keras_posenc import preprocessing
from keras_posenc.export.serving_graph import _generated_text
from keras_posenc.preprocessing.text_sequences import token_id_lists

CASES = [
    ("i ' m not sure , it ' s late .", "i'm not sure, it's late."),
    ("don ' t go ( see below ) !", "don't go (see below)!"),
    ("you ' re , we ' ve , they ' ll , he ' d", "you're, we've, they'll, he'd"),
    ("#Person2# ' s brother is 5 % taller .", "#Person2#'s brother is 5% taller."),
    ("I ' M here ; ok ?", "I'M here; ok?"),
    ("wait . . .", "wait..."),
    # A quote that opens a phrase is not a contraction: left alone.
    ("he said ' hello ' to me", "he said ' hello ' to me"),
    ("héllo ☃ .", "héllo ☃."),
    ("", ""),
]


@pytest.mark.parametrize("spaced, readable", CASES)
def test_readable_text_joins_what_detokenizing_spaced(spaced, readable):
    assert preprocessing.readable_text(spaced) == readable


def test_python_lists_and_graphs_give_the_same_text():
    spaced = [case[0] for case in CASES]
    readable = [case[1] for case in CASES]
    assert preprocessing.readable_text(spaced) == readable
    graph = tf.function(preprocessing.readable_text)(tf.constant(spaced))
    assert [value.decode("utf-8") for value in graph.numpy()] == readable


def test_decode_generated_and_the_serving_graph_agree():
    tokenizer = keras_posenc.tokenizers.fit_word_piece_tokenizer(
        ["i'm not sure, it's late. don't go!"] * 20, vocabulary_size=200
    )
    ids = token_id_lists(tokenizer, ["i'm not sure, it's late.", "don't go!"])
    eos = tokenizer.token_to_id("[EOS]")
    rows = np.zeros((2, 16), "int32")
    for row, token_ids in enumerate(ids):
        rows[row, 1 : 1 + len(token_ids)] = token_ids
        rows[row, 1 + len(token_ids)] = eos
    decoded = preprocessing.decode_generated(tokenizer, rows, 1)
    assert decoded == ["i'm not sure, it's late.", "don't go!"]
    # As in the exported signature: traced by TensorFlow, tensors throughout.
    served = tf.function(
        lambda token_ids: _generated_text(tokenizer, token_ids, tf.ones(2), eos)
    )(tf.constant(rows))
    assert [value.decode("utf-8") for value in served.numpy()] == decoded

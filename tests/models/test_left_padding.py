"""Left-padded batches in the ready models: `positions=` in call, `generate`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.models import Seq2SeqTransformer
from keras_posenc.models import TransformerClassifier
from keras_posenc.models import TransformerLM
from keras_posenc.utils import to_numpy

SIZES = dict(
    vocabulary_size=16,
    max_length=12,
    hidden_dim=16,
    num_layers=1,
    num_heads=2,
    intermediate_dim=32,
    dropout=0.0,
)
RIGHT = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]], "int32")
LEFT = np.array([[0, 0, 3, 4, 5], [6, 7, 8, 9, 10]], "int32")
# What a user computes for left padding: the real tokens numbered 0, 1, ...
LEFT_POSITIONS = np.cumsum(LEFT != 0, axis=1) - 1
# Schemes of every kind: a learned table (pads at position -1), added and
# concatenated, a relative bias, rotary, Shaw's embeddings.
SCHEMES = ("learned", "learned_concat", "t5", "rotary", "shaw")


def test_lm_with_left_padding_and_positions_equals_the_right_padded_batch():
    for position in SCHEMES:
        model = TransformerLM(**SIZES, position=position)
        right = to_numpy(model(RIGHT))
        left = to_numpy(model(LEFT, positions=LEFT_POSITIONS))
        np.testing.assert_allclose(
            left[0, 2:], right[0, :3], atol=2e-5, err_msg=position
        )
        np.testing.assert_allclose(left[1], right[1], atol=2e-5, err_msg=position)
        # `0, 1, ...` given explicitly (1-D, shared by the batch) is the default.
        explicit = to_numpy(model(RIGHT, positions=np.arange(5)))
        np.testing.assert_allclose(explicit[0, :3], right[0, :3], atol=2e-5)
        np.testing.assert_allclose(explicit[1], right[1], atol=2e-5)


def test_classifier_and_seq2seq_take_positions():
    for position in ("learned", "rotary"):
        classifier = TransformerClassifier(**SIZES, num_classes=3, position=position)
        np.testing.assert_allclose(
            to_numpy(classifier(LEFT, positions=LEFT_POSITIONS)),
            to_numpy(classifier(RIGHT)),
            atol=2e-5,
            err_msg=position,
        )
        seq2seq = Seq2SeqTransformer(**SIZES, position=position)
        decoder = np.array([[1, 7, 6], [1, 8, 0]], "int32")
        right = seq2seq({"encoder_token_ids": RIGHT, "decoder_token_ids": decoder})
        left = seq2seq(
            {"encoder_token_ids": LEFT, "decoder_token_ids": decoder},
            positions={"encoder_positions": LEFT_POSITIONS},
        )
        np.testing.assert_allclose(
            to_numpy(left), to_numpy(right), atol=2e-5, err_msg=position
        )


def test_positions_in_a_functional_graph():
    model = TransformerLM(**SIZES, position="alibi")
    token_ids = keras.Input((None,), dtype="int32")
    positions = keras.Input((None,), dtype="int32")
    outer = keras.Model([token_ids, positions], model(token_ids, positions=positions))
    assert tuple(outer.output.shape) == (None, None, SIZES["vocabulary_size"])
    np.testing.assert_allclose(
        to_numpy(outer.predict([LEFT, LEFT_POSITIONS], verbose=0))[0, 2:],
        to_numpy(model(RIGHT))[0, :3],
        atol=2e-5,
    )


def test_bad_positions_are_named():
    model = TransformerLM(**SIZES, position="rotary")
    with pytest.raises(ValueError, match=r"`positions` must have the shape"):
        model(RIGHT, positions=np.zeros((2, 4), "int32"))
    with pytest.raises(TypeError, match=r"`positions` must hold integer"):
        model(RIGHT, positions=np.zeros((2, 5), "float32"))
    seq2seq = Seq2SeqTransformer(**SIZES, position="t5")
    inputs = {"encoder_token_ids": RIGHT, "decoder_token_ids": RIGHT}
    with pytest.raises(ValueError, match=r"keys \['encoder_positions', 'decoder"):
        seq2seq(inputs, positions={"positions": LEFT_POSITIONS})
    # The failed calls left the models usable.
    assert to_numpy(model(RIGHT)).shape == (2, 5, SIZES["vocabulary_size"])
    assert to_numpy(seq2seq(inputs)).shape == (2, 5, SIZES["vocabulary_size"])


def test_generate_takes_left_padded_prompts_and_names_a_bad_row():
    lm = TransformerLM(**SIZES, position="learned")
    np.testing.assert_array_equal(
        lm.generate(LEFT, max_length=8), lm.generate(RIGHT, max_length=8)
    )
    seq2seq = Seq2SeqTransformer(**SIZES, position="sinusoidal")
    np.testing.assert_array_equal(
        seq2seq.generate(ops.convert_to_tensor(LEFT), max_length=6),
        seq2seq.generate(RIGHT, max_length=6),
    )
    with pytest.raises(ValueError, match=r"Row 1 has padding inside: \[6, 0, 8\]"):
        lm.generate([[3, 4, 5], [6, 0, 8]], max_length=8)
    with pytest.raises(ValueError, match=r"Row 0 is all padding"):
        seq2seq.generate([[0, 0], [3, 4]], max_length=6)

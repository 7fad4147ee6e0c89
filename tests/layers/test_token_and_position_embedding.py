import keras
import numpy as np
import pytest

from keras_posenc.layers import TokenAndPositionEmbedding
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test
from tests.reference import sinusoidal_reference

TOKENS = np.array([[4, 9, 2, 0, 0], [1, 2, 3, 4, 5]], "int32")


@pytest.mark.parametrize(
    "position, merge, position_dim, width, num_weights",
    [
        ("sinusoidal", "add", None, 8, 1),
        ("sinusoidal", "concat", 4, 12, 1),
        ("learned", "add", None, 8, 2),
        ("learned", "concat", None, 16, 2),
        ("none", "add", None, 8, 1),
    ],
)
def test_layer_harness(position, merge, position_dim, width, num_weights, tmp_path):
    run_layer_test(
        TokenAndPositionEmbedding,
        init_kwargs={
            "vocabulary_size": 10,
            "max_length": 6,
            "embedding_dim": 8,
            "position": position,
            "merge": merge,
            "position_dim": position_dim,
            "mask_zero": True,
        },
        input_data=TOKENS,
        expected_output_shape=(2, 5, width),
        expected_num_trainable_weights=num_weights,
        tmp_path=tmp_path,
    )


def test_values_and_mask():
    layer = TokenAndPositionEmbedding(
        vocabulary_size=10,
        max_length=6,
        embedding_dim=6,
        merge="concat",
        position_dim=4,
        mask_zero=True,
    )
    out = to_numpy(layer(TOKENS, start_index=1))
    table = to_numpy(layer.token_embedding.embeddings)
    np.testing.assert_allclose(out[..., :6], table[TOKENS], atol=1e-6)
    expected = sinusoidal_reference(np.arange(1, 6), 4)
    np.testing.assert_allclose(
        out[..., 6:], np.broadcast_to(expected, (2, 5, 4)), atol=5e-5
    )
    np.testing.assert_array_equal(to_numpy(layer.compute_mask(TOKENS)), TOKENS != 0)
    assert TokenAndPositionEmbedding(10, 6, 6).compute_mask(TOKENS) is None


def test_mask_propagates_in_a_model():
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = TokenAndPositionEmbedding(10, 6, 8, mask_zero=True)(inputs)
    outputs = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, outputs)
    padded = np.array([[4, 9, 2, 0, 0]], "int32")
    np.testing.assert_allclose(
        model.predict(padded, verbose=0),
        model.predict(padded[:, :3], verbose=0),
        atol=1e-6,
    )


def test_step_by_step_equals_full():
    layer = TokenAndPositionEmbedding(10, 6, 4, position="learned")
    full = to_numpy(layer(TOKENS))
    steps = [to_numpy(layer(TOKENS[:, i : i + 1], start_index=i)) for i in range(5)]
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"vocabulary_size": 0}, "vocabulary_size"),
        ({"max_length": False}, "max_length"),
        ({"embedding_dim": -8}, "embedding_dim"),
        ({"position": "rotary"}, "position"),
        ({"merge": "sum"}, "merge"),
        ({"position_dim": 0}, "position_dim"),
        (
            {"position_dim": 4},
            "position_dim",
        ),  # add needs position_dim == embedding_dim
        ({"mask_zero": "yes"}, "mask_zero"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    base = {"vocabulary_size": 10, "max_length": 6, "embedding_dim": 8}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        TokenAndPositionEmbedding(**{**base, **kwargs})


def test_invalid_inputs():
    layer = TokenAndPositionEmbedding(10, 6, 8)
    with pytest.raises(TypeError, match="integer token ids"):
        layer(TOKENS.astype("float32"))
    with pytest.raises(ValueError, match="inputs.shape"):
        TokenAndPositionEmbedding(10, 6, 8)(TOKENS[..., None])


def test_tie_weights_as_in_keras_hub():
    hidden = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    tied = TokenAndPositionEmbedding(10, 6, 8, tie_weights=True)
    tied(TOKENS)
    logits = to_numpy(tied.token_embedding(hidden, reverse=True))
    table = to_numpy(tied.token_embedding.embeddings)
    np.testing.assert_allclose(logits, hidden @ table.T, atol=1e-5)
    untied = TokenAndPositionEmbedding(10, 6, 8, tie_weights=False)
    untied(TOKENS)
    assert len(untied.weights) == len(tied.weights) + 1
    revived = TokenAndPositionEmbedding.from_config(untied.get_config())
    assert revived.tie_weights is False
    with pytest.raises(ValueError, match="`tie_weights` must be a boolean"):
        TokenAndPositionEmbedding(10, 6, 8, tie_weights="yes")

import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc import layers
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test

SCHEMES = ["rotary", "xpos", "alibi", "t5", "shaw", None]
RELATIVE = ["rotary", "xpos", "alibi", "t5", "shaw"]
NUM_HEADS, KEY_DIM, WIDTH = 2, 4, 8


def _x(batch=2, length=7, width=WIDTH, seed=0):
    return (
        np.random.default_rng(seed)
        .normal(size=(batch, length, width))
        .astype("float32")
    )


def _attention(position, **kwargs):
    return layers.PositionalMultiHeadAttention(
        num_heads=NUM_HEADS, key_dim=KEY_DIM, position=position, **kwargs
    )


@pytest.mark.parametrize("position", SCHEMES)
def test_layer_harness(position, tmp_path):
    num_weights = 8 + {"t5": 1, "shaw": 2}.get(position, 0)
    x = _x()
    run_layer_test(
        layers.PositionalMultiHeadAttention,
        init_kwargs={"num_heads": NUM_HEADS, "key_dim": KEY_DIM, "position": position},
        input_data=(x, x),
        call_kwargs={"use_causal_mask": True},
        expected_output_shape=(2, 7, WIDTH),
        expected_num_trainable_weights=num_weights,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("position", SCHEMES)
def test_cached_step_by_step_equals_full(position):
    x = _x(length=6)
    attention = _attention(position)
    full = to_numpy(attention(x, x, use_causal_mask=True))
    cache = ops.zeros((2, 2, 6, NUM_HEADS, KEY_DIM))
    steps = []
    for index in range(6):
        token = x[:, index : index + 1]
        out, cache = attention(
            token, token, use_causal_mask=True, cache=cache, cache_update_index=index
        )
        steps.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    # A prompt of 3 in one call, then steps, with a tensor index (compiled loops).
    cache = ops.zeros((2, 2, 6, NUM_HEADS, KEY_DIM))
    out, cache = attention(
        x[:, :3], x[:, :3], use_causal_mask=True, cache=cache, cache_update_index=0
    )
    np.testing.assert_allclose(to_numpy(out), full[:, :3], atol=1e-5)
    for index in range(3, 6):
        out, cache = attention(
            x[:, index : index + 1],
            x[:, index : index + 1],
            use_causal_mask=True,
            cache=cache,
            cache_update_index=ops.convert_to_tensor(index, "int32"),
        )
        np.testing.assert_allclose(to_numpy(out), full[:, index : index + 1], atol=1e-5)


@pytest.mark.parametrize("position", RELATIVE)
def test_translation_invariance(position):
    """Shifting every position by the same offset changes nothing."""
    x = _x(length=5)
    attention = _attention(position)
    base_out, base_scores = attention(
        x, x, positions=np.arange(5), return_attention_scores=True
    )
    out, scores = attention(
        x, x, positions=np.arange(37, 42), return_attention_scores=True
    )
    np.testing.assert_allclose(to_numpy(scores), to_numpy(base_scores), atol=1e-5)
    np.testing.assert_allclose(to_numpy(out), to_numpy(base_out), atol=1e-5)


@pytest.mark.parametrize("position", SCHEMES)
def test_fused_path_equals_explicit_path(position):
    x = _x(length=6)
    attention = _attention(position)
    padding = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    fused = attention(x, x, value_mask=padding, use_causal_mask=True)
    explicit, _ = attention(
        x, x, value_mask=padding, use_causal_mask=True, return_attention_scores=True
    )
    np.testing.assert_allclose(to_numpy(fused), to_numpy(explicit), atol=1e-5)


@pytest.mark.parametrize("position", SCHEMES)
def test_padding_does_not_change_real_positions(position):
    x = _x(length=5)
    attention = _attention(position)
    short = to_numpy(attention(x[:, :3], x[:, :3]))
    # Right padding: two extra keys masked out.
    mask = np.array([[1, 1, 1, 0, 0]] * 2, bool)
    right = to_numpy(attention(x, x, query_mask=mask, value_mask=mask))
    np.testing.assert_allclose(right[:, :3], short, atol=1e-5)
    # Left padding with explicit positions: real tokens at positions 0..2.
    left_x = np.concatenate([x[:, 3:], x[:, :3]], axis=1)
    left_mask = np.array([[0, 0, 1, 1, 1]] * 2, bool)
    left_positions = np.array([[0, 0, 0, 1, 2]] * 2, "int32")
    left = to_numpy(
        attention(
            left_x,
            left_x,
            query_mask=left_mask,
            value_mask=left_mask,
            positions=left_positions,
        )
    )
    np.testing.assert_allclose(left[:, 2:], short, atol=1e-5)


def test_keras_mask_is_used():
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = layers.TokenAndPositionEmbedding(10, 8, WIDTH, position="none", mask_zero=True)(
        inputs
    )
    x = _attention("alibi")(x, x)
    model = keras.Model(inputs, x)
    tokens = np.array([[3, 4, 5, 0, 0]], "int32")
    np.testing.assert_allclose(
        model.predict(tokens, verbose=0)[:, :3],
        model.predict(tokens[:, :3], verbose=0),
        atol=1e-5,
    )


def test_return_attention_scores_and_causality():
    x = _x(length=4)
    out, scores = _attention("t5")(
        x, x, use_causal_mask=True, return_attention_scores=True
    )
    scores = to_numpy(scores)
    assert scores.shape == (2, NUM_HEADS, 4, 4)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    assert np.all(
        scores[..., np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]] < 1e-6
    )


def test_dropout_only_in_training():
    x = _x(length=6)
    attention = _attention("rotary", dropout=0.5)
    a = to_numpy(attention(x, x, training=False))
    b = to_numpy(attention(x, x, training=False))
    np.testing.assert_allclose(a, b)
    c = to_numpy(attention(x, x, training=True))
    assert not np.allclose(a, c)


def test_cross_attention_with_precomputed_cache():
    query, memory = _x(length=3), _x(length=5, seed=1)
    attention = _attention(None)
    full = to_numpy(attention(query, memory))
    k = attention.key_dense(memory)
    v = attention.value_dense(memory)
    cache = ops.stack([k, v], axis=1)
    out, _ = attention(query, memory, cache=cache)
    np.testing.assert_allclose(to_numpy(out), full, atol=1e-5)


def test_position_layer_instance_and_serialization(tmp_path):
    position = layers.T5RelativePositionBias(
        num_heads=NUM_HEADS, bidirectional=False, num_buckets=8, max_distance=16
    )
    attention = _attention(position)
    x = _x(length=4)
    out = to_numpy(attention(x, x, use_causal_mask=True))
    config = attention.get_config()
    revived = layers.PositionalMultiHeadAttention.from_config(config)
    assert isinstance(revived.position_layer, layers.T5RelativePositionBias)
    assert revived.position_layer.bidirectional is False
    revived(x, x)
    revived.set_weights(attention.get_weights())
    np.testing.assert_allclose(
        to_numpy(revived(x, x, use_causal_mask=True)), out, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"key_dim": -1}, "key_dim"),
        ({"key_dim": True}, "key_dim"),
        ({"value_dim": 0}, "value_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"position": "bogus"}, "position"),
        ({"position": 3}, "position"),
        ({"position": "rotary", "key_dim": 5}, "key_dim"),
        ({"position": keras.layers.Dense(3)}, "position"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    base = {"num_heads": 2, "key_dim": 4}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        layers.PositionalMultiHeadAttention(**{**base, **kwargs})


def test_keras_multi_head_attention_arguments():
    """`keras.layers.MultiHeadAttention`'s arguments, with the same meanings."""
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    layer = layers.PositionalMultiHeadAttention(
        num_heads=2,
        key_dim=4,
        position="rotary",
        output_shape=12,
        kernel_regularizer="l2",
        bias_regularizer=keras.regularizers.L1(0.1),
        kernel_constraint="non_neg",
        bias_constraint=keras.constraints.MaxNorm(1.0),
        seed=3,
        flash_attention=False,
    )
    out = layer(x, x)
    assert tuple(out.shape) == (2, 5, 12)
    assert len(layer.losses) == 8  # four kernels and four biases
    dense = (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)
    assert all(d.kernel.constraint is layer.kernel_constraint for d in dense)
    assert all(d.bias.constraint is layer.bias_constraint for d in dense)
    revived = layers.PositionalMultiHeadAttention.from_config(layer.get_config())
    assert revived.output_dim == 12 and revived.seed == 3
    assert revived.flash_attention is False
    assert isinstance(revived.bias_regularizer, keras.regularizers.L1)
    revived(x, x)
    revived.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(revived(x, x)), to_numpy(out), atol=1e-6)
    # flash_attention=None (fuse where possible) computes the same.
    auto = layers.PositionalMultiHeadAttention(
        num_heads=2, key_dim=4, position="rotary", output_dim=12
    )
    auto(x, x)
    auto.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(auto(x, x)), to_numpy(out), atol=1e-5)

    with pytest.raises(ValueError, match="`output_shape`.*output_dim=4"):
        layers.PositionalMultiHeadAttention(2, 4, output_shape=8, output_dim=4)
    with pytest.raises(ValueError, match="`flash_attention` must be one of"):
        layers.PositionalMultiHeadAttention(2, 4, flash_attention="yes")
    flash = layers.PositionalMultiHeadAttention(
        2, 4, position="alibi", flash_attention=True
    )
    with pytest.raises(ValueError, match="cannot honour a position bias"):
        flash(x, x)
    # The failed call leaves the layer usable once the setting is changed.
    flash.flash_attention = None
    assert tuple(flash(x, x).shape) == (2, 5, 8)

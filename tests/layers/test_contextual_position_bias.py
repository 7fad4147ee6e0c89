"""CoPE against the paper's reference code; caches, padding, packing, encoders."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc import layers
from keras_posenc.layers.contextual_position_bias import ContextualPositionBias
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test

NUM_HEADS, KEY_DIM, WIDTH = 2, 8, 16
# One input shape for most tests: JAX compiles each op once per shape.
LENGTH = 6


def _x(batch=2, length=LENGTH, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, length, WIDTH)).astype("float32")


def _attention(num_positions, seed=1, **kwargs):
    """Attention with CoPE, random projection biases and a random table."""
    dtype = kwargs.get("dtype")
    attention = layers.PositionalMultiHeadAttention(
        num_heads=NUM_HEADS,
        key_dim=KEY_DIM,
        position=ContextualPositionBias(num_positions=num_positions, dtype=dtype),
        **kwargs,
    )
    attention.build((None, None, WIDTH))
    rng = np.random.default_rng(seed)
    for dense in (
        attention.query_dense,
        attention.key_dense,
        attention.value_dense,
        attention.output_dense,
    ):
        dense.bias.assign(0.1 * rng.normal(size=dense.bias.shape))
    table = attention.position_layer.position_embeddings
    table.assign(rng.normal(size=table.shape))
    return attention


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    x = np.exp(x - x.max(-1, keepdims=True))
    return x / x.sum(-1, keepdims=True)


def _interpolate(query, table, pos):
    """The reference's interpolation between integer positions (float64)."""
    pos_ceil = np.ceil(pos).astype(int)
    pos_floor = np.floor(pos).astype(int)
    logits_int = query @ table
    logits_ceil = np.take_along_axis(logits_int, pos_ceil, -1)
    logits_floor = np.take_along_axis(logits_int, pos_floor, -1)
    w = pos - pos_floor
    return logits_ceil * w + logits_floor * (1 - w)


def cope_reference(query, attn_logits, table, npos_max):
    """`CoPE.forward` of the paper's reference code in numpy."""
    gates = _sigmoid(attn_logits)
    pos = np.flip(np.cumsum(np.flip(gates, -1), -1), -1)
    pos = np.minimum(pos, npos_max - 1)
    return _interpolate(query, table, pos), pos


def between_reference(query, attn_logits, table, npos_max, query_pos, key_pos):
    """Our extension: the gates of the keys between query and key, either way.

    For increasing key positions of one sequence, `p_ij` sums the gates of the
    keys whose position lies between `query_pos[i]` and `key_pos[j]`.
    """
    gates = _sigmoid(attn_logits)  # (..., T, S)
    low = np.minimum(query_pos[:, None], key_pos[None, :])  # (T, S)
    high = np.maximum(query_pos[:, None], key_pos[None, :])
    inside = (key_pos[None, None, :] >= low[..., None]) & (
        key_pos[None, None, :] <= high[..., None]
    )  # (T, S, t)
    pos = np.einsum("...it,ijt->...ij", gates, inside.astype("float64"))
    pos = np.minimum(pos, npos_max - 1)
    return _interpolate(query, table, pos), pos


def _weights(attention):
    return [
        to_numpy(w).astype("float64")
        for dense in (
            attention.query_dense,
            attention.key_dense,
            attention.value_dense,
            attention.output_dense,
        )
        for w in dense.weights
    ]


def reference_attention(attention, x, causal):
    """`SelfAttn.forward` of the reference code with the layer's projections.

    Returns the `(batch, T, WIDTH)` output, the `(batch, heads, T, S)`
    probabilities and the positions `p_ij`.
    """
    wq, bq, wk, bk, wv, bv, wo, bo = _weights(attention)
    table = to_numpy(attention.position_layer.position_embeddings).astype("float64")
    npos_max = attention.position_layer.num_positions
    x = x.astype("float64")
    # (batch, heads, T, d)
    query = np.einsum("btc,chd->bhtd", x, wq) + bq[None, :, None]
    key = np.einsum("btc,chd->bhtd", x, wk) + bk[None, :, None]
    val = np.einsum("btc,chd->bhtd", x, wv) + bv[None, :, None]
    length = x.shape[1]
    attn_logits = query @ key.swapaxes(-1, -2) / math.sqrt(KEY_DIM)
    if causal:
        mask = np.tril(np.ones((length, length)))
        with np.errstate(divide="ignore"):
            attn_logits = attn_logits + np.log(mask)
        term, pos = cope_reference(query, attn_logits, table, npos_max)
    else:
        positions = np.arange(length)
        term, pos = between_reference(
            query, attn_logits, table, npos_max, positions, positions
        )
    attn_logits = attn_logits + term
    attn = _softmax(attn_logits)
    heads = attn @ val  # (batch, heads, T, d)
    return np.einsum("bhtd,hde->bte", heads, wo) + bo, attn, pos


@pytest.mark.parametrize("num_positions, causal", [(3, True), (64, True), (3, False)])
def test_attention_matches_the_reference_code(num_positions, causal):
    attention = _attention(num_positions)
    x = _x()
    expected, expected_scores, pos = reference_attention(attention, x, causal)
    if causal:
        real = pos[np.broadcast_to(np.tril(np.ones((LENGTH, LENGTH), bool)), pos.shape)]
    else:
        real = pos.ravel()
    # Fractional positions, and with 3 positions the clamp at 2 is reached.
    assert np.mean(real != np.round(real)) > 0.5
    assert (real.max() == num_positions - 1) == (num_positions == 3)
    fused = attention(x, x, use_causal_mask=causal)
    np.testing.assert_allclose(to_numpy(fused), expected, atol=1e-5, rtol=1e-5)
    explicit, scores = attention(
        x, x, use_causal_mask=causal, return_attention_scores=True
    )
    np.testing.assert_allclose(to_numpy(explicit), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(scores), expected_scores, atol=1e-5)


@pytest.mark.parametrize("offset", [0, 5])
def test_logit_term_in_both_directions(offset):
    """`compute_logits` against the formula, keys before and after the query."""
    layer = ContextualPositionBias(num_positions=4)
    layer.build((None, None, NUM_HEADS, KEY_DIM))
    rng = np.random.default_rng(2)
    table = rng.normal(size=(KEY_DIM, 4))
    layer.position_embeddings.assign(table)
    query = rng.normal(size=(2, LENGTH, NUM_HEADS, KEY_DIM)).astype("float32")
    key = rng.normal(size=(2, LENGTH, NUM_HEADS, KEY_DIM)).astype("float32")
    # Queries in any order against keys in order: keys on both sides.
    query_pos = offset + np.array([3, 0, 5, 2, 4, 1], "int32")
    key_pos = offset + np.arange(LENGTH, dtype="int32")
    actual = to_numpy(layer.compute_logits(query, query_pos, key_pos, key=key))
    q = query.astype("float64").transpose(0, 2, 1, 3)
    k = key.astype("float64").transpose(0, 2, 1, 3)
    attn_logits = q @ k.swapaxes(-1, -2) / math.sqrt(KEY_DIM)
    expected, pos = between_reference(q, attn_logits, table, 4, query_pos, key_pos)
    assert pos.max() == 3 and np.mean(pos != np.round(pos)) > 0.5
    np.testing.assert_allclose(actual, expected * math.sqrt(KEY_DIM), atol=1e-5)
    # The layer call gives the same term.
    called = layer(query, key, positions=query_pos, key_positions=key_pos)
    np.testing.assert_allclose(to_numpy(called), actual, atol=1e-6)


def test_cached_chunks_and_steps_equal_full():
    attention = _attention(num_positions=4)
    x = _x()
    full = to_numpy(attention(x, x, use_causal_mask=True))
    cache = ops.zeros((2, 2, LENGTH, NUM_HEADS, KEY_DIM))
    # A prompt of 2, a step, a chunk of 2 at a tensor index, a step.
    for start, stop, index in ((0, 2, 0), (2, 3, None), (3, 5, None), (5, 6, None)):
        chunk = x[:, start:stop]
        if index is None:  # as in a compiled loop
            index = ops.convert_to_tensor(start, "int32")
        out, cache = attention(
            chunk, chunk, use_causal_mask=True, cache=cache, cache_update_index=index
        )
        np.testing.assert_allclose(to_numpy(out), full[:, start:stop], atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_left_padding_with_per_example_positions(causal):
    """A left-padded row gives on its real tokens what the reference gives alone."""
    attention = _attention(num_positions=4)
    a, b = _x(batch=1, length=4, seed=3), _x(batch=1, seed=4)
    pads = _x(batch=1, length=2, seed=5)  # junk under the mask
    x = np.concatenate([np.concatenate([pads, a], axis=1), b])
    mask = np.array([[0, 0, 1, 1, 1, 1], [1] * LENGTH], bool)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype("int32")
    np.testing.assert_array_equal(positions[0], [0, 0, 0, 1, 2, 3])
    out = attention(
        x,
        x,
        query_mask=mask,
        value_mask=mask,
        positions=positions,
        use_causal_mask=causal,
    )
    out = to_numpy(out)
    np.testing.assert_allclose(
        out[0, 2:], reference_attention(attention, a, causal)[0][0], atol=1e-5
    )
    np.testing.assert_allclose(
        out[1], reference_attention(attention, b, causal)[0][0], atol=1e-5
    )


@pytest.mark.parametrize("causal", [True, False])
def test_packed_sequences_equal_separate_ones(causal):
    """Packed rows give what the reference gives on each sequence alone."""
    attention = _attention(num_positions=4)
    x = _x(seed=6)
    # Lengths 3, 1 and 2 in the first row (a sequence of one, then one that
    # starts at the same position 0), 4 and 2 in the second.
    bounds = [[(0, 3), (3, 4), (4, 6)], [(0, 4), (4, 6)]]
    segments = np.zeros((2, LENGTH), int)
    positions = np.zeros((2, LENGTH), "int32")
    for row, parts in enumerate(bounds):
        for number, (start, stop) in enumerate(parts):
            segments[row, start:stop] = number
            positions[row, start:stop] = np.arange(stop - start)
    np.testing.assert_array_equal(positions[0], [0, 1, 2, 0, 0, 1])
    block = segments[:, :, None] == segments[:, None, :]
    out = to_numpy(
        attention(
            x, x, attention_mask=block, positions=positions, use_causal_mask=causal
        )
    )
    for row, parts in enumerate(bounds):
        for start, stop in parts:
            alone = reference_attention(attention, x[row : row + 1, start:stop], causal)
            np.testing.assert_allclose(out[row, start:stop], alone[0][0], atol=1e-5)


def test_layer_harness(tmp_path):
    rng = np.random.default_rng(7)
    query = rng.normal(size=(2, 5, NUM_HEADS, KEY_DIM)).astype("float32")
    key = rng.normal(size=(2, 6, NUM_HEADS, KEY_DIM)).astype("float32")
    run_layer_test(
        ContextualPositionBias,
        init_kwargs={"num_positions": 4, "embeddings_initializer": "random_normal"},
        input_data=(query, key),
        expected_output_shape=(2, NUM_HEADS, 5, 6),
        expected_num_trainable_weights=1,
        tmp_path=tmp_path,
    )


def test_in_a_model_trains_and_reloads(tmp_path):
    inputs = keras.Input((None, WIDTH))
    attention = layers.PositionalMultiHeadAttention(
        num_heads=NUM_HEADS,
        key_dim=KEY_DIM,
        position=ContextualPositionBias(num_positions=4),
    )
    model = keras.Model(inputs, attention(inputs, inputs, use_causal_mask=True))
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x = _x()
    assert np.isfinite(model.train_on_batch(x, x[:, ::-1]))
    # The zero table learns.
    table = attention.position_layer.position_embeddings
    assert tuple(table.shape) == (KEY_DIM, 4)
    assert np.abs(to_numpy(table)).max() > 0
    path = str(tmp_path / "cope.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)
    revived = layers.PositionalMultiHeadAttention.from_config(attention.get_config())
    assert isinstance(revived.position_layer, ContextualPositionBias)
    assert revived.position_layer.num_positions == 4


def test_mixed_precision_is_close_to_float32():
    x = _x()
    reference = _attention(num_positions=4)
    mixed = _attention(num_positions=4, dtype="mixed_bfloat16")
    mixed.set_weights(reference.get_weights())
    expected = to_numpy(reference(x, x, use_causal_mask=True))
    out = mixed(x, x, use_causal_mask=True)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert mixed.position_layer.position_embeddings.dtype == "float32"
    np.testing.assert_allclose(
        to_numpy(out).astype("float32"), expected, atol=5e-2, rtol=5e-2
    )


def test_config_round_trip():
    layer = ContextualPositionBias(
        num_positions=12, embeddings_initializer="random_normal", name="cope"
    )
    config = layer.get_config()
    assert config["num_positions"] == 12
    revived = ContextualPositionBias.from_config(config)
    assert revived.get_config() == config
    assert isinstance(revived.embeddings_initializer, keras.initializers.RandomNormal)


@pytest.mark.parametrize("num_positions", [0, -3, 2.5, True, "8", None])
def test_bad_num_positions_raise(num_positions):
    with pytest.raises(ValueError, match="`num_positions` must be a positive integer"):
        ContextualPositionBias(num_positions=num_positions)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="initializer"):
        ContextualPositionBias(embeddings_initializer="no_such_initializer")
    layer = ContextualPositionBias()
    with pytest.raises(ValueError, match="`query` must have shape"):
        layer.build((2, 5, 16))
    query = np.zeros((1, 3, NUM_HEADS, KEY_DIM), "float32")
    with pytest.raises(ValueError, match="needs `key`"):
        layer.compute_logits(query, np.arange(3), np.arange(3))
    layer.build(query.shape)
    with pytest.raises(ValueError, match="last axis of `positions`"):
        layer(query, query, positions=np.arange(4, dtype="int32"))
    with pytest.raises(ValueError, match="`key` must have shape"):
        layer(query, np.zeros((1, 3, NUM_HEADS + 1, KEY_DIM), "float32"))
    with pytest.raises(ValueError, match="key_dim=8 the layer was built with"):
        layer(np.zeros((1, 3, NUM_HEADS, 4), "float32"), query)
    with pytest.raises(TypeError, match="floating-point `query`"):
        layer(np.zeros((1, 3, NUM_HEADS, KEY_DIM), "int32"), query)

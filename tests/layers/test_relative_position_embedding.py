import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.layers import RelativePositionEmbedding
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test


def shaw_reference(query, weights, key_table, value_table, query_pos, key_pos, k):
    """Shaw et al. 2018, eq. 3-5, in float64, building a^K_ij and a^V_ij.

    query (batch, q, heads, d); weights (batch, heads, q, k_len) or None;
    positions (len,) or (batch, len). Returns the logit term
    (batch, heads, q, k_len) and the value term (batch, q, heads, d) or None.
    """
    query = np.asarray(query, "float64")
    batch, q_len = query.shape[:2]
    query_pos = np.broadcast_to(np.asarray(query_pos), (batch, q_len))
    key_pos = np.asarray(key_pos)
    key_pos = np.broadcast_to(key_pos, (batch, key_pos.shape[-1]))
    logits, values = [], []
    for b in range(batch):
        relative = key_pos[b][None, :] - query_pos[b][:, None]
        index = np.clip(relative, -k, k) + k
        a_key = np.asarray(key_table, "float64")[index]  # (q, k_len, d)
        logits.append(np.einsum("qhd,qkd->hqk", query[b], a_key))
        if weights is not None:
            a_value = np.asarray(value_table, "float64")[index]
            values.append(
                np.einsum("hqk,qkd->qhd", np.asarray(weights[b], "float64"), a_value)
            )
    return np.stack(logits), (np.stack(values) if weights is not None else None)


def _random(*shape):
    return np.random.normal(size=shape).astype("float32")


def _softmax(x):
    x = np.exp(x - x.max(-1, keepdims=True))
    return (x / x.sum(-1, keepdims=True)).astype("float32")


def _built_layer(head_dim=4, **kwargs):
    layer = RelativePositionEmbedding(**kwargs)
    layer.build((None, None, 2, head_dim))
    # Distinct rows so that a wrong bucket cannot go unnoticed.
    layer.key_embeddings.assign(_random(*layer.key_embeddings.shape))
    if layer.use_values:
        layer.value_embeddings.assign(_random(*layer.value_embeddings.shape))
    return layer


def _tables(layer):
    key_table = to_numpy(layer.key_embeddings)
    value_table = to_numpy(layer.value_embeddings) if layer.use_values else None
    return key_table, value_table


@pytest.mark.parametrize(
    "init_kwargs, call_kwargs, num_weights",
    [
        ({}, None, 2),
        ({"max_distance": 2, "use_values": False}, None, 1),
        ({"max_distance": 1}, {"start_index": 3}, 2),
    ],
)
def test_layer_harness(init_kwargs, call_kwargs, num_weights, tmp_path):
    run_layer_test(
        RelativePositionEmbedding,
        init_kwargs=init_kwargs,
        input_data=(_random(2, 5, 3, 4), _random(2, 7, 3, 4)),
        call_kwargs=call_kwargs,
        expected_output_shape=(2, 3, 5, 7),
        expected_num_trainable_weights=num_weights,
        # The call returns the logit term only, so a fit through it leaves
        # `value_embeddings` without a gradient (TensorFlow and PyTorch warn);
        # test_training_updates_both_tables trains both tables instead.
        run_training_check=num_weights == 1,
        tmp_path=tmp_path,
    )


class _ShawSelfAttention(keras.layers.Layer):
    """Minimal attention using the layer the way the lead's attention will."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.relative = RelativePositionEmbedding(max_distance=2)

    def build(self, input_shape):
        self.relative.build(input_shape)

    def call(self, inputs):
        positions = ops.arange(ops.shape(inputs)[1], dtype="int32")
        logits = ops.einsum("bqhd,bkhd->bhqk", inputs, inputs)
        logits = logits + self.relative.compute_logits(inputs, positions, positions)
        weights = ops.softmax(logits / 2.0, axis=-1)
        outputs = ops.einsum("bhqk,bkhd->bqhd", weights, inputs)
        outputs = outputs + self.relative.compute_values(weights, positions, positions)
        return ops.reshape(outputs, (-1, ops.shape(inputs)[1], 8))


def test_training_updates_both_tables():
    inputs = keras.Input(shape=(None, 2, 4))
    attention = _ShawSelfAttention()
    outputs = keras.layers.Dense(1)(attention(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [to_numpy(w) for w in attention.relative.weights]
    assert len(before) == 2
    history = model.fit(
        _random(4, 6, 2, 4), _random(4, 6, 1), batch_size=4, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    for old, new in zip(before, attention.relative.weights):
        assert not np.allclose(old, to_numpy(new)), new.path


def test_weights_and_index_shapes():
    layer = RelativePositionEmbedding(max_distance=3)
    layer.build((2, 5, 3, 8))
    assert tuple(layer.key_embeddings.shape) == (7, 8)
    assert tuple(layer.value_embeddings.shape) == (7, 8)
    index = to_numpy(layer.relative_position_index(np.arange(4), np.arange(6)))
    assert index.shape == (4, 6) and index.dtype == np.int32
    expected = np.clip(np.arange(6)[None] - np.arange(4)[:, None], -3, 3) + 3
    np.testing.assert_array_equal(index, expected)
    index = layer.relative_position_index(np.zeros((2, 4), "int32"), np.arange(6))
    assert tuple(index.shape) == (2, 4, 6)
    index = layer.relative_position_index(np.arange(4), np.zeros((2, 6), "int32"))
    assert tuple(index.shape) == (2, 4, 6)
    assert layer.compute_output_shape((2, 5, 3, 8), (2, 9, 3, 8)) == (2, 3, 5, 9)
    assert layer.compute_output_shape((None, None, 3, 8), (None, None, 3, 8)) == (
        None,
        3,
        None,
        None,
    )


@pytest.mark.parametrize("max_distance", [1, 2, 16])
@pytest.mark.parametrize("offset", [0, 3])
def test_logits_and_values_match_paper(max_distance, offset):
    layer = _built_layer(max_distance=max_distance)
    key_table, value_table = _tables(layer)
    query = _random(2, 4, 2, 4)
    weights = _softmax(_random(2, 2, 4, 9))
    query_pos = offset + np.arange(4)
    key_pos = np.arange(9)
    logits = to_numpy(layer.compute_logits(query, query_pos, key_pos))
    values = to_numpy(layer.compute_values(weights, query_pos, key_pos))
    expected_logits, expected_values = shaw_reference(
        query, weights, key_table, value_table, query_pos, key_pos, max_distance
    )
    assert logits.shape == (2, 2, 4, 9) and values.shape == (2, 4, 2, 4)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(values, expected_values, atol=1e-5, rtol=1e-5)
    # The layer call gives the same logits from `start_index`.
    called = to_numpy(layer(query, _random(2, 9, 2, 4), start_index=offset))
    np.testing.assert_allclose(called, expected_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_heads", [1, 8])
@pytest.mark.parametrize("per_example", [False, True])
def test_values_routes_match_paper(num_heads, per_example):
    # max_distance=3 has 7 buckets: batch 2 x 1 head takes the scatter route,
    # 2 x 8 heads the one-hot matmul (shared or per example).
    layer = _built_layer(max_distance=3)
    key_table, value_table = _tables(layer)
    weights = _softmax(_random(2, num_heads, 5, 8))
    query_pos = (
        np.array([[4, 5, 6, 7, 8], [0, 0, 1, 2, 3]])
        if per_example
        else (np.arange(4, 9))
    )
    key_pos = np.arange(8)
    values = to_numpy(layer.compute_values(weights, query_pos, key_pos))
    _, expected = shaw_reference(
        np.zeros((2, 5, num_heads, 4)),
        weights,
        key_table,
        value_table,
        query_pos,
        key_pos,
        3,
    )
    assert values.shape == (2, 5, num_heads, 4)
    np.testing.assert_allclose(values, expected, atol=1e-5, rtol=1e-5)


def test_distances_beyond_max_distance_use_end_rows():
    layer = _built_layer(max_distance=2, head_dim=3)
    key_table, value_table = _tables(layer)
    query = _random(1, 1, 2, 3)
    key_pos = np.array([0, 97, 98, 99, 100, 101, 102, 103, 500])
    logits = to_numpy(layer.compute_logits(query, np.array([100]), key_pos))[0]
    # Row r of the table for each key: clip(j - 100, -2, 2) + 2.
    rows = [0, 0, 0, 1, 2, 3, 4, 4, 4]
    np.testing.assert_allclose(
        logits, np.einsum("hd,kd->hk", query[0, 0], key_table[rows])[:, None], atol=1e-5
    )
    weights = np.zeros((1, 2, 1, 9), "float32")
    weights[..., 0] = 0.25  # distance -100
    weights[..., -1] = 0.75  # distance +400
    values = to_numpy(layer.compute_values(weights, np.array([100]), key_pos))
    expected = 0.25 * value_table[0] + 0.75 * value_table[4]
    np.testing.assert_allclose(values[0, 0], np.stack([expected] * 2), atol=1e-6)


def test_translation_invariance():
    layer = _built_layer(max_distance=3)
    query = _random(2, 5, 2, 4)
    weights = _softmax(_random(2, 2, 5, 6))
    query_pos, key_pos = np.arange(2, 7), np.arange(6)
    logits = to_numpy(layer.compute_logits(query, query_pos, key_pos))
    values = to_numpy(layer.compute_values(weights, query_pos, key_pos))
    for shift in (1, 1000, 123457):
        shifted_query, shifted_key = query_pos + shift, key_pos + shift
        shifted_logits = layer.compute_logits(query, shifted_query, shifted_key)
        shifted_values = layer.compute_values(weights, shifted_query, shifted_key)
        np.testing.assert_allclose(to_numpy(shifted_logits), logits, atol=1e-6)
        np.testing.assert_allclose(to_numpy(shifted_values), values, atol=1e-6)


def test_cached_queries_equal_rows_of_full_result():
    layer = _built_layer(max_distance=2)
    length = 7
    query = _random(2, length, 2, 4)
    key = _random(2, length, 2, 4)
    weights = _softmax(_random(2, 2, length, length))
    full_logits = to_numpy(layer(query, key))
    full_values = to_numpy(
        layer.compute_values(weights, np.arange(length), np.arange(length))
    )
    for start in range(length):
        step = to_numpy(layer(query[:, start : start + 1], key, start_index=start))
        np.testing.assert_allclose(
            step, full_logits[:, :, start : start + 1], atol=1e-6
        )
    # A chunk of queries with a tensor start_index, as in a compiled decode loop.
    start = ops.convert_to_tensor(3, "int32")
    chunk = to_numpy(layer(query[:, 3:6], key, start_index=start))
    np.testing.assert_allclose(chunk, full_logits[:, :, 3:6], atol=1e-6)
    chunk_values = to_numpy(
        layer.compute_values(weights[:, :, 3:6], 3 + np.arange(3), np.arange(length))
    )
    np.testing.assert_allclose(chunk_values, full_values[:, 3:6], atol=1e-6)


def test_per_example_positions():
    layer = _built_layer(max_distance=2)
    key_table, value_table = _tables(layer)
    query = _random(2, 5, 2, 4)
    key = _random(2, 5, 2, 4)
    weights = _softmax(_random(2, 2, 5, 5))
    # Left padding and a packed sequence: positions repeat and restart.
    positions = np.array([[0, 0, 0, 1, 2], [0, 1, 2, 0, 1]], "int32")
    expected_logits, expected_values = shaw_reference(
        query, weights, key_table, value_table, positions, positions, 2
    )
    logits = to_numpy(layer(query, key, positions=positions))
    values = to_numpy(layer.compute_values(weights, positions, positions))
    assert values.shape == (2, 5, 2, 4)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(values, expected_values, atol=1e-5, rtol=1e-5)
    # Per-example query positions against shared key positions, and vice versa.
    key_pos = np.arange(7)
    weights = _softmax(_random(2, 2, 5, 7))
    expected_logits, expected_values = shaw_reference(
        query, weights, key_table, value_table, positions + 3, key_pos, 2
    )
    logits = layer(
        query, _random(2, 7, 2, 4), positions=positions + 3, key_positions=key_pos
    )
    values = layer.compute_values(weights, positions + 3, key_pos)
    np.testing.assert_allclose(to_numpy(logits), expected_logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(values), expected_values, atol=1e-5, rtol=1e-5)
    query_pos = np.arange(5)
    key_pos = np.array([[0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]])
    expected_logits, expected_values = shaw_reference(
        query, weights, key_table, value_table, query_pos, key_pos, 2
    )
    logits = layer.compute_logits(query, query_pos, key_pos)
    values = layer.compute_values(weights, query_pos, key_pos)
    np.testing.assert_allclose(to_numpy(logits), expected_logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(values), expected_values, atol=1e-5, rtol=1e-5)
    # A (1, len) row broadcasts over the batch like a (len,) vector.
    np.testing.assert_allclose(
        to_numpy(layer(query, key, positions=np.arange(5)[None])),
        to_numpy(layer(query, key)),
        atol=1e-6,
    )


def test_positions_override_start_index():
    layer = _built_layer(max_distance=2)
    query = _random(2, 3, 2, 4)
    key = _random(2, 8, 2, 4)
    by_start = to_numpy(layer(query, key, start_index=4))
    by_positions = to_numpy(
        layer(
            query,
            key,
            start_index=1,
            positions=np.arange(4, 7),
            key_positions=np.arange(8),
        )
    )
    np.testing.assert_allclose(by_positions, by_start, atol=1e-6)
    # Equal lengths: `positions` is used for the keys too, so only the
    # differences of the positions count.
    key = _random(2, 3, 2, 4)
    np.testing.assert_allclose(
        to_numpy(layer(query, key, positions=np.arange(4, 7))),
        to_numpy(layer(query, key)),
        atol=1e-6,
    )


def test_dynamic_sequence_length():
    query_input = keras.Input(shape=(None, 2, 4))
    key_input = keras.Input(shape=(None, 2, 4))
    layer = RelativePositionEmbedding(max_distance=2)
    outputs = layer(query_input, key_input)
    assert tuple(outputs.shape) == (None, 2, None, None)
    model = keras.Model([query_input, key_input], outputs)
    for q_len, k_len in ((3, 3), (2, 9)):
        query, key = _random(2, q_len, 2, 4), _random(2, k_len, 2, 4)
        out = model.predict([query, key], verbose=0)
        assert out.shape == (2, 2, q_len, k_len)
        np.testing.assert_allclose(out, to_numpy(layer(query, key)), atol=1e-6)


@pytest.mark.parametrize(
    "policy, atol", [("mixed_float16", 2e-2), ("mixed_bfloat16", 1e-1)]
)
def test_mixed_precision(policy, atol):
    layer = _built_layer(max_distance=2, dtype=policy)
    assert keras.backend.standardize_dtype(layer.key_embeddings.dtype) == "float32"
    key_table, value_table = _tables(layer)
    query = _random(2, 4, 2, 4)
    weights = _softmax(_random(2, 2, 4, 6))
    # Far positions: the index stays exact in int32 whatever the compute dtype.
    query_pos, key_pos = 70000 + np.arange(4), 70000 + np.arange(6)
    logits = layer.compute_logits(query, query_pos, key_pos)
    values = layer.compute_values(weights, query_pos, key_pos)
    compute_dtype = policy.split("_")[1]
    assert keras.backend.standardize_dtype(logits.dtype) == compute_dtype
    assert keras.backend.standardize_dtype(values.dtype) == compute_dtype
    expected_logits, expected_values = shaw_reference(
        query, weights, key_table, value_table, query_pos, key_pos, 2
    )
    np.testing.assert_allclose(
        to_numpy(ops.cast(logits, "float32")), expected_logits, atol=atol
    )
    np.testing.assert_allclose(
        to_numpy(ops.cast(values, "float32")), expected_values, atol=atol
    )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"max_distance": 0}, "max_distance"),
        ({"max_distance": -1}, "max_distance"),
        ({"max_distance": True}, "max_distance"),
        ({"max_distance": 1.5}, "max_distance"),
        ({"max_distance": "16"}, "max_distance"),
        ({"max_distance": None}, "max_distance"),
        ({"use_values": 1}, "use_values"),
        ({"use_values": "yes"}, "use_values"),
        ({"use_values": None}, "use_values"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        RelativePositionEmbedding(**kwargs)
    assert f"{argument}={next(iter(kwargs.values()))!r}" in str(info.value)


def test_invalid_initializer():
    with pytest.raises(ValueError, match="not_an_initializer"):
        RelativePositionEmbedding(embeddings_initializer="not_an_initializer")


def test_invalid_inputs():
    query, key = _random(2, 4, 2, 4), _random(2, 6, 2, 4)
    with pytest.raises(ValueError, match="head_dim"):
        RelativePositionEmbedding().build((2, 4, 2, None))
    with pytest.raises(ValueError, match="query.shape"):
        RelativePositionEmbedding()(_random(2, 4, 8), key)
    with pytest.raises(ValueError, match="key_positions"):
        RelativePositionEmbedding()(query, key, positions=np.arange(4))
    with pytest.raises(ValueError, match="key_positions"):
        RelativePositionEmbedding()(
            query, key, positions=np.arange(4), key_positions=np.arange(5)
        )
    with pytest.raises(ValueError, match="positions"):
        RelativePositionEmbedding()(
            query, key, positions=np.arange(3), key_positions=np.arange(6)
        )
    with pytest.raises(ValueError, match="start_index"):
        RelativePositionEmbedding()(query, key, start_index=-1)
    layer = RelativePositionEmbedding(use_values=False)
    layer(query, key)
    with pytest.raises(ValueError, match="use_values"):
        layer.compute_values(
            np.zeros((2, 2, 4, 6), "float32"), np.arange(4), np.arange(6)
        )

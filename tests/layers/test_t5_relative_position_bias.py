import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.layers import T5RelativePositionBias
from keras_posenc.layers import t5_relative_position_bucket
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test

HEADS = 3


def reference_bucket(
    relative_position, bidirectional=True, num_buckets=32, max_distance=128
):
    """Mesh TensorFlow's `_relative_position_bucket` (also HF `T5Attention`).

    Transcribed line by line in numpy. The logarithm is float32 on purpose:
    the reference computes `tf.log(tf.to_float(n) / max_exact)` (HF:
    `torch.log(n.float() / max_exact)`), then truncates with an int cast.
    """
    relative_position = np.asarray(relative_position, dtype="int64")
    ret = np.zeros_like(relative_position)
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype("int64") * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # log(0) = -inf (and its int cast) only reaches entries `is_small` drops.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(n.astype("float32") / max_exact)
        val_if_large = max_exact + np.trunc(
            log_ratio
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        ).astype("int64")
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    ret += np.where(is_small, n, val_if_large)
    return ret


def reference_bias(table, query_positions, key_positions, **bucket_kwargs):
    """`bias[b, h, i, j] = table[bucket(key[j] - query[i]), h]`, 4-D."""
    query_positions = np.atleast_2d(query_positions)
    key_positions = np.atleast_2d(key_positions)
    relative = key_positions[:, None, :] - query_positions[:, :, None]
    buckets = reference_bucket(relative, **bucket_kwargs)
    return np.moveaxis(np.asarray(table, "float64")[buckets], -1, 1)


def _scores(batch=2, query=5, key=5, heads=HEADS):
    return np.random.uniform(-1, 1, (batch, heads, query, key)).astype("float32")


def _built_layer(**kwargs):
    layer = T5RelativePositionBias(num_heads=HEADS, **kwargs)
    layer.build((None, HEADS, None, None))
    # Distinct values per bucket and head, so a wrong bucket cannot pass.
    table = np.random.normal(size=(layer.num_buckets, HEADS)).astype("float32")
    layer.embeddings.assign(table)
    return layer, table


@pytest.mark.parametrize("bidirectional", [True, False])
def test_layer_harness(bidirectional, tmp_path):
    run_layer_test(
        T5RelativePositionBias,
        init_kwargs={
            "num_heads": HEADS,
            "num_buckets": 8,
            "max_distance": 16,
            "bidirectional": bidirectional,
        },
        input_data=_scores(),
        expected_output_shape=(2, HEADS, 5, 5),
        expected_num_trainable_weights=1,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(
    "num_buckets, max_distance", [(32, 128), (64, 256), (16, 20), (8, 16), (6, 7)]
)
def test_bucket_matches_mesh_tensorflow(bidirectional, num_buckets, max_distance):
    rng = np.random.default_rng(0)
    relative = np.concatenate(
        [
            np.arange(-3 * max_distance, 3 * max_distance + 1),
            rng.integers(-100 * max_distance, 100 * max_distance, size=2000),
            [-(2**31) + 1, -(2**24) - 1, 2**24 + 1, 2**31 - 1],
        ]
    ).astype("int32")
    kwargs = {
        "bidirectional": bidirectional,
        "num_buckets": num_buckets,
        "max_distance": max_distance,
    }
    ours = to_numpy(t5_relative_position_bucket(relative, **kwargs))
    assert ours.dtype == np.int32
    expected = reference_bucket(relative, **kwargs)
    np.testing.assert_array_equal(ours, expected)
    assert ours.min() >= 0 and ours.max() < num_buckets
    # Any shape.
    grid = relative[:24].reshape(2, 3, 4)
    np.testing.assert_array_equal(
        to_numpy(t5_relative_position_bucket(grid, **kwargs)),
        reference_bucket(grid, **kwargs),
    )


def test_bucket_defaults_spot_values():
    # Bidirectional, 32 buckets, 128: keys before the query in 0..15, after in 16..31.
    relative = np.array([0, -1, -7, -8, -12, -20, -127, -128, -5000, 1, 7, 8, 5000])
    expected = [0, 1, 7, 8, 9, 10, 15, 15, 15, 17, 23, 24, 31]
    np.testing.assert_array_equal(
        to_numpy(t5_relative_position_bucket(relative)), expected
    )
    causal = to_numpy(t5_relative_position_bucket(relative, bidirectional=False))
    # Causal, 32 buckets: exact below 16, keys after the query all in bucket 0.
    np.testing.assert_array_equal(causal, [0, 1, 7, 8, 12, 17, 31, 31, 31, 0, 0, 0, 0])


@pytest.mark.parametrize("bidirectional", [True, False])
def test_bias_matches_table_lookup(bidirectional):
    kwargs = {"num_buckets": 8, "max_distance": 20, "bidirectional": bidirectional}
    layer, table = _built_layer(**kwargs)
    bucket_kwargs = dict(kwargs)
    query, key = np.arange(3, 9), np.arange(40)
    bias = to_numpy(layer.compute_bias(query, key))
    assert bias.shape == (1, HEADS, 6, 40)
    np.testing.assert_allclose(
        bias, reference_bias(table, query, key, **bucket_kwargs), atol=1e-7
    )
    # Per-example positions give a per-example bias.
    query = np.array([[0, 1, 2], [50, 7, 0]])
    key = np.array([[0, 0, 1, 2, 3], [9, 50, 60, 2, 1]])
    bias = to_numpy(layer.compute_bias(query, key))
    assert bias.shape == (2, HEADS, 3, 5)
    np.testing.assert_allclose(
        bias, reference_bias(table, query, key, **bucket_kwargs), atol=1e-7
    )
    # The call adds it to the scores.
    scores = _scores(batch=2, query=6, key=6)
    out = to_numpy(layer(scores))
    expected = scores + reference_bias(
        table, np.arange(6), np.arange(6), **bucket_kwargs
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_translation_invariance():
    layer, _ = _built_layer(num_buckets=16, max_distance=40)
    query, key = np.arange(7), np.arange(11)
    base = to_numpy(layer.compute_bias(query, key))
    for shift in (1, 13, 1000, 123456):
        shifted = to_numpy(layer.compute_bias(query + shift, key + shift))
        np.testing.assert_array_equal(shifted, base)
    scores = _scores(batch=1, query=7, key=7)
    np.testing.assert_array_equal(
        to_numpy(layer(scores, positions=np.arange(7) + 500)), to_numpy(layer(scores))
    )


@pytest.mark.parametrize("bidirectional", [True, False])
def test_cached_offsets_equal_full_bias(bidirectional):
    layer, _ = _built_layer(num_buckets=8, max_distance=12, bidirectional=bidirectional)
    length = 20
    scores = _scores(batch=2, query=length, key=length)
    full = to_numpy(layer(scores))
    for step in range(length):
        # One new query at cache slot `step`, attending to the whole cache.
        out = to_numpy(layer(scores[:, :, step : step + 1], start_index=step))
        np.testing.assert_allclose(out, full[:, :, step : step + 1], atol=1e-6)
    chunk = layer(scores[:, :, 5:9], start_index=ops.convert_to_tensor(5, "int32"))
    np.testing.assert_allclose(to_numpy(chunk), full[:, :, 5:9], atol=1e-6)
    # The bias the attention layer asks for under a cache.
    bias = to_numpy(layer.compute_bias(np.arange(5, 9), np.arange(length)))
    np.testing.assert_allclose(bias[0], full[0, :, 5:9] - scores[0, :, 5:9], atol=1e-6)


def test_positions_and_key_positions():
    layer, table = _built_layer(num_buckets=8, max_distance=16)
    scores = _scores(batch=2, query=4, key=4)
    # Left padding: per-example positions, reused for the keys in self-attention.
    positions = np.array([[0, 0, 1, 2], [0, 1, 2, 3]])
    out = to_numpy(layer(scores, positions=positions))
    expected = scores + reference_bias(
        table, positions, positions, num_buckets=8, max_distance=16
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # `positions` overrides `start_index`.
    np.testing.assert_array_equal(
        to_numpy(layer(scores, start_index=9, positions=positions)), out
    )
    # Cross-attention lengths need explicit key positions.
    scores = _scores(batch=2, query=2, key=6)
    with pytest.raises(ValueError, match="key_positions"):
        layer(scores, positions=np.array([4, 5]))
    key_positions = np.array([[0, 1, 2, 3, 4, 5], [3, 3, 4, 5, 6, 7]])
    out = to_numpy(
        layer(scores, positions=np.array([4, 5]), key_positions=key_positions)
    )
    expected = scores + reference_bias(
        table, np.array([[4, 5], [4, 5]]), key_positions, num_buckets=8, max_distance=16
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # `key_positions` alone, with query positions from `start_index`.
    out = to_numpy(layer(scores, start_index=3, key_positions=np.arange(10, 16)))
    expected = scores + reference_bias(
        table, np.arange(3, 5), np.arange(10, 16), num_buckets=8, max_distance=16
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_dynamic_lengths():
    layer = T5RelativePositionBias(num_heads=HEADS, num_buckets=8, max_distance=16)
    inputs = keras.Input(shape=(HEADS, None, None))
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, HEADS, None, None)
    model = keras.Model(inputs, outputs)
    table = to_numpy(layer.embeddings)
    for query, key in ((3, 3), (6, 6), (2, 5)):
        scores = _scores(batch=2, query=query, key=key)
        out = model.predict(scores, verbose=0)
        expected = scores + reference_bias(
            table, np.arange(query), np.arange(key), num_buckets=8, max_distance=16
        )
        np.testing.assert_allclose(out, expected, atol=1e-6)
    assert layer.compute_output_shape((None, HEADS, None, None)) == (
        None,
        HEADS,
        None,
        None,
    )


def test_mixed_precision():
    layer = T5RelativePositionBias(num_heads=HEADS, dtype="mixed_bfloat16")
    scores = np.zeros((1, HEADS, 3, 3), "float32")
    out = layer(scores, start_index=100000, key_positions=np.arange(99999, 100002))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(layer.embeddings.dtype) == "float32"
    bias = layer.compute_bias(np.arange(100000, 100003), np.arange(99999, 100002))
    assert keras.backend.standardize_dtype(bias.dtype) == "bfloat16"
    table = to_numpy(layer.embeddings)
    expected = reference_bias(
        table, np.arange(100000, 100003), np.arange(99999, 100002)
    )
    np.testing.assert_allclose(
        to_numpy(ops.cast(out, "float32")), expected, atol=1e-2, rtol=1e-2
    )


def test_compute_bias_builds_the_layer():
    layer = T5RelativePositionBias(num_heads=2)
    bias = layer.compute_bias(np.arange(3), np.arange(4))
    assert layer.built and tuple(bias.shape) == (1, 2, 3, 4)
    assert tuple(layer.embeddings.shape) == (32, 2)


def test_custom_initializer_is_serialized():
    layer = T5RelativePositionBias(num_heads=2, embeddings_initializer="zeros")
    revived = T5RelativePositionBias.from_config(layer.get_config())
    out = to_numpy(revived(np.ones((1, 2, 3, 3), "float32")))
    np.testing.assert_array_equal(out, np.ones((1, 2, 3, 3)))


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"num_heads": -1}, "num_heads"),
        ({"num_heads": True}, "num_heads"),
        ({"num_heads": 2.0}, "num_heads"),
        ({"num_buckets": 0}, "num_buckets"),
        ({"num_buckets": 31}, "num_buckets"),
        ({"num_buckets": 2}, "num_buckets"),
        ({"num_buckets": 32.0}, "num_buckets"),
        ({"num_buckets": 1, "bidirectional": False}, "num_buckets"),
        ({"max_distance": 0}, "max_distance"),
        ({"max_distance": True}, "max_distance"),
        ({"max_distance": 8}, "max_distance"),
        ({"max_distance": 16, "bidirectional": False}, "max_distance"),
        ({"bidirectional": 1}, "bidirectional"),
        ({"bidirectional": "yes"}, "bidirectional"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    kwargs = {"num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        T5RelativePositionBias(**kwargs)
    assert f"{argument}={kwargs[argument]!r}" in str(info.value)
    if argument != "num_heads":
        bucket_kwargs = {k: v for k, v in kwargs.items() if k != "num_heads"}
        with pytest.raises(ValueError, match=f"`{argument}`"):
            t5_relative_position_bucket(np.arange(3), **bucket_kwargs)


def test_invalid_inputs():
    layer = T5RelativePositionBias(num_heads=HEADS)
    with pytest.raises(ValueError, match=r"num_heads=3.*inputs.shape=\(2, 4, 5, 5\)"):
        layer(_scores(heads=4))
    with pytest.raises(ValueError, match="inputs.shape"):
        T5RelativePositionBias(num_heads=HEADS)(np.zeros((2, HEADS, 5), "float32"))
    with pytest.raises(ValueError, match="num_heads=3"):
        T5RelativePositionBias(num_heads=HEADS)(keras.Input(shape=(2, None, None)))
    layer = T5RelativePositionBias(num_heads=HEADS)
    layer(_scores())
    with pytest.raises(ValueError, match="inputs.shape"):
        layer(_scores(heads=2))
    with pytest.raises(ValueError, match="start_index"):
        layer(_scores(), start_index=-1)
    with pytest.raises(ValueError, match="`positions`"):
        layer(_scores(query=5), positions=np.arange(4))
    with pytest.raises(ValueError, match="`positions`"):
        layer(_scores(), positions=np.zeros((2, 5, 1), "int32"))
    with pytest.raises(ValueError, match="`key_positions`"):
        layer(_scores(key=5), key_positions=np.arange(6))
    with pytest.raises(ValueError, match="`key_positions`.*batch size 2"):
        layer(_scores(batch=2), key_positions=np.zeros((3, 5), "int32"))

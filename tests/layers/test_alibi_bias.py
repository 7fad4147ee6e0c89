import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.layers import ALiBiBias
from keras_posenc.layers import alibi_slopes
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test

HEADS = 4


def reference_get_slopes(n):
    """`get_slopes` of ofirpress/attention_with_linear_biases, transcribed."""

    def get_slopes_power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (
        get_slopes_power_of_2(closest_power_of_2)
        + reference_get_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2]
    )


def reference_bias(num_heads, query_positions, key_positions, causal=True):
    """Press et al. 2022, float64, shape (batch or 1, heads, query, key).

    Causal: `m_h * (key - query)`; bidirectional: `-m_h * |key - query|`.
    """
    slopes = np.asarray(reference_get_slopes(num_heads), "float64")[:, None, None]
    query_positions = np.atleast_2d(query_positions).astype("float64")
    key_positions = np.atleast_2d(key_positions).astype("float64")
    relative = key_positions[:, None, :] - query_positions[:, :, None]
    if not causal:
        relative = -np.abs(relative)
    return slopes[None] * relative[:, None]


def _scores(batch=2, query=5, key=5, heads=HEADS):
    return np.random.uniform(-1, 1, (batch, heads, query, key)).astype("float32")


@pytest.mark.parametrize("causal", [True, False])
def test_layer_harness(causal, tmp_path):
    run_layer_test(
        ALiBiBias,
        init_kwargs={"num_heads": HEADS, "causal": causal},
        input_data=_scores(),
        expected_output_shape=(2, HEADS, 5, 5),
        expected_num_trainable_weights=0,
        tmp_path=tmp_path,
    )


def test_slopes_match_reference():
    for num_heads in range(1, 41):
        slopes = alibi_slopes(num_heads)
        assert slopes.shape == (num_heads,) and slopes.dtype == np.float32
        np.testing.assert_allclose(
            slopes, reference_get_slopes(num_heads), rtol=1e-6, atol=0
        )
    np.testing.assert_array_equal(alibi_slopes(8), [2.0**-i for i in range(1, 9)])
    # Not a power of two: the 4 slopes of 4 heads, then every other one of 8.
    np.testing.assert_array_equal(
        alibi_slopes(6), [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("num_heads", [1, 4, 6])
def test_bias_matches_formula(causal, num_heads):
    layer = ALiBiBias(num_heads=num_heads, causal=causal)
    query, key = np.arange(3, 9), np.arange(12)
    bias = to_numpy(layer.compute_bias(query, key))
    assert bias.shape == (1, num_heads, 6, 12)
    np.testing.assert_allclose(
        bias, reference_bias(num_heads, query, key, causal), rtol=1e-6, atol=1e-6
    )
    query = np.array([[0, 1, 2], [50, 7, 0]])
    key = np.array([[0, 0, 1, 2, 3], [9, 50, 60, 2, 1]])
    bias = to_numpy(layer.compute_bias(query, key))
    assert bias.shape == (2, num_heads, 3, 5)
    np.testing.assert_allclose(
        bias, reference_bias(num_heads, query, key, causal), rtol=1e-6, atol=1e-6
    )
    scores = _scores(batch=2, query=7, key=7, heads=num_heads)
    out = to_numpy(layer(scores))
    expected = scores + reference_bias(num_heads, np.arange(7), np.arange(7), causal)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    if causal:
        # On the causally kept keys: -m * (i - j) <= 0, and 0 on the diagonal.
        kept = np.tril(np.ones((7, 7), bool))
        assert np.all((out - scores)[..., kept] <= 0)
        np.testing.assert_allclose(
            np.diagonal(out - scores, axis1=2, axis2=3), 0, atol=1e-6
        )


def test_keras_hub_alibi_bias_on_causal_entries():
    keras_hub = pytest.importorskip("keras_hub")
    # keras_hub.layers.AlibiBias adds `m_h * (j - (key_length - 1))` to every
    # query row: the distance to the *last* key, not to the query. That is our
    # bias `m_h * (j - i)` plus the per-row constant `m_h * (i - (key_length - 1))`,
    # so (1) the last query row (a decoding step at the end of the cache) is
    # equal, and (2) on the keys a causal mask keeps, the softmax is equal.
    # Its slopes (alibi_bias_max=8) are the paper's, like ours.
    length = 9
    theirs_layer = keras_hub.layers.AlibiBias()
    ours_layer = ALiBiBias(num_heads=HEADS)
    scores = _scores(batch=2, query=length, key=length)
    theirs = to_numpy(theirs_layer(scores)).astype("float64")
    ours = to_numpy(ours_layer(scores)).astype("float64")
    np.testing.assert_allclose(ours[:, :, -1], theirs[:, :, -1], atol=1e-6)
    step = to_numpy(ours_layer(scores[:, :, -1:], start_index=length - 1))
    np.testing.assert_allclose(step, theirs[:, :, -1:], atol=1e-6)
    # The difference is constant along the key axis of each row.
    difference = ours - theirs
    np.testing.assert_allclose(
        difference, difference[..., :1].repeat(length, -1), atol=1e-5
    )
    kept = np.tril(np.ones((length, length), bool))

    def causal_softmax(x):
        x = np.where(kept, x, -np.inf)
        x = np.exp(x - x.max(-1, keepdims=True))
        return x / x.sum(-1, keepdims=True)

    np.testing.assert_allclose(causal_softmax(ours), causal_softmax(theirs), atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_translation_invariance(causal):
    layer = ALiBiBias(num_heads=HEADS, causal=causal)
    query, key = np.arange(7), np.arange(11)
    base = to_numpy(layer.compute_bias(query, key))
    for shift in (1, 13, 1000, 123456):
        shifted = to_numpy(layer.compute_bias(query + shift, key + shift))
        np.testing.assert_array_equal(shifted, base)
    scores = _scores(batch=1, query=7, key=7)
    np.testing.assert_array_equal(
        to_numpy(layer(scores, positions=np.arange(7) + 500)), to_numpy(layer(scores))
    )


@pytest.mark.parametrize("causal", [True, False])
def test_step_by_step_equals_full(causal):
    layer = ALiBiBias(num_heads=HEADS, causal=causal)
    length = 10
    scores = _scores(batch=2, query=length, key=length)
    full = to_numpy(layer(scores))
    for step in range(length):
        out = to_numpy(layer(scores[:, :, step : step + 1], start_index=step))
        np.testing.assert_allclose(out, full[:, :, step : step + 1], atol=1e-6)
    chunk = layer(scores[:, :, 4:7], start_index=ops.convert_to_tensor(4, "int32"))
    np.testing.assert_allclose(to_numpy(chunk), full[:, :, 4:7], atol=1e-6)
    bias = to_numpy(layer.compute_bias(np.arange(4, 7), np.arange(length)))
    np.testing.assert_allclose(bias[0], full[0, :, 4:7] - scores[0, :, 4:7], atol=1e-6)


def test_positions_and_key_positions():
    layer = ALiBiBias(num_heads=HEADS)
    scores = _scores(batch=2, query=4, key=4)
    positions = np.array([[0, 0, 1, 2], [0, 1, 2, 3]])
    out = to_numpy(layer(scores, positions=positions))
    expected = scores + reference_bias(HEADS, positions, positions)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(
        to_numpy(layer(scores, start_index=9, positions=positions)), out
    )
    scores = _scores(batch=2, query=2, key=6)
    with pytest.raises(ValueError, match="key_positions"):
        layer(scores, positions=np.array([4, 5]))
    key_positions = np.array([[0, 1, 2, 3, 4, 5], [3, 3, 4, 5, 6, 7]])
    out = to_numpy(
        layer(scores, positions=np.array([4, 5]), key_positions=key_positions)
    )
    expected = scores + reference_bias(HEADS, np.array([[4, 5], [4, 5]]), key_positions)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    out = to_numpy(layer(scores, start_index=3, key_positions=np.arange(10, 16)))
    expected = scores + reference_bias(HEADS, np.arange(3, 5), np.arange(10, 16))
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_dynamic_lengths():
    inputs = keras.Input(shape=(HEADS, None, None))
    outputs = ALiBiBias(num_heads=HEADS, causal=False)(inputs)
    assert tuple(outputs.shape) == (None, HEADS, None, None)
    model = keras.Model(inputs, outputs)
    for query, key in ((3, 3), (6, 6), (2, 5)):
        scores = _scores(batch=2, query=query, key=key)
        out = model.predict(scores, verbose=0)
        expected = scores + reference_bias(
            HEADS, np.arange(query), np.arange(key), causal=False
        )
        np.testing.assert_allclose(out, expected, atol=1e-6)
    assert ALiBiBias(num_heads=HEADS).compute_output_shape(
        (None, HEADS, None, None)
    ) == (None, HEADS, None, None)


def test_bfloat16_keeps_far_positions_apart():
    # Relative positions are integers before any cast: a query at 5000 still
    # sees a key 3 positions back at distance 3 under mixed_bfloat16.
    layer = ALiBiBias(num_heads=HEADS, dtype="mixed_bfloat16")
    scores = np.zeros((1, HEADS, 1, 4), "float32")
    out = layer(scores, start_index=5000, key_positions=np.arange(4997, 5001))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    expected = reference_bias(HEADS, np.array([5000]), np.arange(4997, 5001))
    np.testing.assert_allclose(
        to_numpy(ops.cast(out, "float32")), expected, rtol=1e-2, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"num_heads": -1}, "num_heads"),
        ({"num_heads": True}, "num_heads"),
        ({"num_heads": 2.0}, "num_heads"),
        ({"num_heads": 4, "causal": 1}, "causal"),
        ({"num_heads": 4, "causal": "true"}, "causal"),
        ({"num_heads": 4, "causal": None}, "causal"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        ALiBiBias(**kwargs)
    assert f"{argument}={kwargs[argument]!r}" in str(info.value)
    if argument == "num_heads":
        with pytest.raises(ValueError, match="`num_heads`"):
            alibi_slopes(kwargs["num_heads"])


def test_invalid_inputs():
    layer = ALiBiBias(num_heads=HEADS)
    with pytest.raises(ValueError, match=r"num_heads=4.*inputs.shape=\(2, 3, 5, 5\)"):
        layer(_scores(heads=3))
    with pytest.raises(ValueError, match="inputs.shape"):
        ALiBiBias(num_heads=HEADS)(np.zeros((2, HEADS, 5), "float32"))
    with pytest.raises(ValueError, match="num_heads=4"):
        ALiBiBias(num_heads=HEADS)(keras.Input(shape=(2, None, None)))
    layer = ALiBiBias(num_heads=HEADS)
    layer(_scores())
    with pytest.raises(ValueError, match="inputs.shape"):
        layer(_scores(heads=2))
    with pytest.raises(ValueError, match="start_index"):
        layer(_scores(), start_index=-1)
    with pytest.raises(ValueError, match="`positions`"):
        layer(_scores(query=5), positions=np.arange(4))
    with pytest.raises(ValueError, match="`key_positions`"):
        layer(_scores(key=5), key_positions=np.arange(6))
    with pytest.raises(ValueError, match="`key_positions`.*batch size 2"):
        layer(_scores(batch=2), key_positions=np.zeros((3, 5), "int32"))

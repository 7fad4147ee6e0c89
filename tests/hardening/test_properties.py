"""Property tests (hypothesis): random lengths, widths, offsets and head counts.

Bounded for CI: few examples per property, `deadline=None` (the first call of
a shape compiles), `derandomize=True` so that every run tries the same
examples, and no example database written into the checkout. Every example
adds to the "property examples run" count printed at the end of the run.
"""

import math

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from keras_posenc import layers
from keras_posenc.utils import to_numpy
from tests.hardening.counts import record
from tests.reference import sinusoidal_reference

SCHEMES = ("rotary", "xpos", "alibi", "t5", "shaw", "none")
RELATIVE = ("rotary", "xpos", "alibi", "t5", "shaw")


def bounded(max_examples):
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        # The suite's autouse fixture only resets global Keras state.
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


def count():
    record("property examples run", 1)


def normal(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# === Cached step-by-step decoding equals full decoding ===


@pytest.mark.parametrize("position", SCHEMES)
@bounded(max_examples=2)
@given(
    length=st.integers(1, 4),
    prompt=st.integers(1, 4),
    num_heads=st.integers(1, 2),
    half_key_dim=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_cached_decoding_equals_full(
    position, length, prompt, num_heads, half_key_dim, seed
):
    prompt = min(prompt, length)
    key_dim = 2 * half_key_dim  # even: rotary and xPos rotate pairs
    keras.utils.set_random_seed(seed)
    attention = layers.PositionalMultiHeadAttention(
        num_heads=num_heads, key_dim=key_dim, position=position
    )
    x = normal((1, length, 4), seed)
    full = to_numpy(attention(x, x, use_causal_mask=True))
    cache = ops.zeros((1, 2, length, num_heads, key_dim))
    # The prompt in one call, then one token per call.
    outputs = []
    for start, stop in [(0, prompt)] + [(i, i + 1) for i in range(prompt, length)]:
        out, cache = attention(
            x[:, start:stop],
            x[:, start:stop],
            use_causal_mask=True,
            cache=cache,
            cache_update_index=start,
        )
        outputs.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, atol=1e-5)
    count()


# === Relative schemes are translation invariant ===


@pytest.mark.parametrize("position", RELATIVE)
@bounded(max_examples=2)
@given(
    length=st.integers(1, 4),
    num_heads=st.integers(1, 2),
    shift=st.integers(1, 2048),
    seed=st.integers(0, 2**16),
)
def test_relative_schemes_are_translation_invariant(
    position, length, num_heads, shift, seed
):
    attention = layers.PositionalMultiHeadAttention(
        num_heads=num_heads, key_dim=4, position=position
    )
    x = normal((1, length, 8), seed)
    base = np.arange(length)
    out, scores = attention(x, x, positions=base, return_attention_scores=True)
    shifted_out, shifted_scores = attention(
        x, x, positions=base + shift, return_attention_scores=True
    )
    # Rotary angles `p * theta` are float32: the rounding of an angle grows
    # with the position (about 1.2e-7 * p radians).
    atol = 1e-5 + 2e-7 * shift
    np.testing.assert_allclose(to_numpy(shifted_scores), to_numpy(scores), atol=atol)
    np.testing.assert_allclose(to_numpy(shifted_out), to_numpy(out), atol=atol)
    count()


@pytest.mark.parametrize("name", ["ALiBiBias", "T5RelativePositionBias"])
@bounded(max_examples=3)
@given(
    query_length=st.integers(1, 4),
    key_length=st.integers(1, 4),
    num_heads=st.integers(1, 4),
    shift=st.integers(-1000, 100_000),
)
def test_biases_depend_only_on_distance(
    name, query_length, key_length, num_heads, shift
):
    layer = getattr(layers, name)(num_heads=num_heads)
    query = np.arange(query_length) + 1000
    key = np.arange(key_length) + 1000
    bias = to_numpy(layer.compute_bias(query, key))
    shifted = to_numpy(layer.compute_bias(query + shift, key + shift))
    np.testing.assert_array_equal(shifted, bias)
    count()


# === Sinusoidal dot products depend only on the distance ===


@bounded(max_examples=6)
@given(
    half_width=st.integers(1, 32),
    first=st.integers(0, 4096),
    second=st.integers(0, 4096),
    shift=st.integers(0, 4096),
)
def test_sinusoidal_dot_product_depends_only_on_distance(
    half_width, first, second, shift
):
    # Even widths: with an odd width the last feature is a sine alone, whose
    # products are not a function of the distance.
    width = 2 * half_width
    layer = layers.SinusoidalPositionEncoding(merge=None)
    inputs = np.zeros((1, 2, width), "float32")
    pair = to_numpy(layer(inputs, positions=np.array([first, second])))[0]
    moved = to_numpy(
        layer(inputs, positions=np.array([first + shift, second + shift]))
    )[0]
    # sum_i sin(a p) sin(a q) + cos(a p) cos(a q) = sum_i cos(a (p - q)).
    frequencies = np.power(10000.0, -2.0 * np.arange(half_width) / width)
    expected = np.sum(np.cos(frequencies * (first - second)))
    # Each float32 angle is rounded by up to 6e-8 * p radians.
    atol = 1e-5 + width * 1.2e-7 * (max(first, second) + shift + 1)
    assert abs(pair[0] @ pair[1] - expected) <= atol
    assert abs(moved[0] @ moved[1] - expected) <= atol
    count()


# === positions=arange(L)+s equals start_index=s ===

TABLE = 64


def position_layer(name, width):
    """A fresh position layer and the kind of input it takes."""
    if name == "SinusoidalPositionEncoding":
        return layers.SinusoidalPositionEncoding(), "embeddings"
    if name == "LearnedPositionEmbedding":
        return layers.LearnedPositionEmbedding(max_length=TABLE), "embeddings"
    if name == "TokenAndPositionEmbedding":
        return layers.TokenAndPositionEmbedding(
            vocabulary_size=10,
            max_length=TABLE,
            embedding_dim=width,
            position="learned",
        ), "ids"
    if name == "RotaryEmbedding":
        return layers.RotaryEmbedding(scaling="linear", scaling_factor=2.0), "heads"
    if name == "XPos":
        return layers.XPos(), "heads"
    if name in ("ALiBiBias", "T5RelativePositionBias"):
        return getattr(layers, name)(num_heads=2), "scores"
    return layers.RelativePositionEmbedding(max_distance=4), "shaw"


POSITION_LAYERS = (
    "SinusoidalPositionEncoding",
    "LearnedPositionEmbedding",
    "TokenAndPositionEmbedding",
    "RotaryEmbedding",
    "XPos",
    "ALiBiBias",
    "T5RelativePositionBias",
    "RelativePositionEmbedding",
)


@pytest.mark.parametrize("name", POSITION_LAYERS)
@bounded(max_examples=2)
@given(
    length=st.integers(1, 5),
    half_width=st.integers(1, 2),
    start=st.integers(0, TABLE - 8),
    per_example=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_positions_equal_start_index(
    name, length, half_width, start, per_example, seed
):
    width = 2 * half_width
    layer, kind = position_layer(name, width)
    positions = np.arange(length) + start
    if per_example:
        positions = np.stack([positions, positions])  # (batch, seq)
    if kind == "embeddings":
        args = (normal((2, length, width), seed),)
    elif kind == "ids":
        args = (np.random.default_rng(seed).integers(1, 10, (2, length)),)
    elif kind == "heads":
        args = (normal((2, length, 2, width), seed),)
    elif kind == "scores":
        args = (normal((2, 2, length, length + 3), seed),)
    else:
        args = (normal((2, length, 2, width), seed), normal((2, length, 2, width), 1))
    extra = {}
    if kind in ("scores", "shaw"):
        # Both calls keep the keys at 0, 1, ...: only the queries move.
        extra = {
            "key_positions": np.arange(args[-1].shape[-1 if kind == "scores" else 1])
        }
    expected = to_numpy(layer(*args, start_index=start, **extra))
    actual = to_numpy(layer(*args, positions=positions, **extra))
    np.testing.assert_allclose(actual, expected, atol=1e-6, rtol=1e-6)
    count()


# === Finite under mixed precision, up to the table or 65,536 ===

# xPos documents its own limits (see its docstring): the keys' first feature
# pair overflows float16 from about 11.09 * scale_base / ln((1 + gamma) / gamma)
# and float32 (hence bfloat16) from 88.7 * scale_base / ln(...).
XPOS_RATIO = math.log(1.4 / 0.4)
LOG_MAX = {"mixed_float16": 11.09, "mixed_bfloat16": 88.7}  # ln(largest finite)
XPOS_LIMIT = {  # keys of magnitude 1: 4,532 and 36,251
    policy: int(log_max * 512 / XPOS_RATIO) for policy, log_max in LOG_MAX.items()
}
# In attention the keys are projections, not of magnitude 1: allow up to 8
# (the scale may reach max / 8), 3,682 and 35,402 positions.
XPOS_ATTENTION_LIMIT = {
    policy: int((log_max - math.log(8.0)) * 512 / XPOS_RATIO)
    for policy, log_max in LOG_MAX.items()
}
MAX_POSITION = 65_536


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("position", SCHEMES)
@bounded(max_examples=2)
@given(
    length=st.integers(1, 4),
    num_heads=st.integers(1, 2),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_attention_is_finite_under_mixed_precision(
    policy, position, length, num_heads, fraction, seed
):
    limit = XPOS_ATTENTION_LIMIT[policy] if position == "xpos" else MAX_POSITION
    start = int(fraction * (limit - length))
    keras.config.set_dtype_policy(policy)
    try:
        attention = layers.PositionalMultiHeadAttention(
            num_heads=num_heads, key_dim=4, position=position
        )
        x = np.random.default_rng(seed).uniform(-1, 1, (1, length, 8))
        positions = np.arange(length) + start
        out = to_numpy(attention(x, x, positions=positions, use_causal_mask=True))
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.all(np.isfinite(out.astype("float32"))), (position, policy, start)
    count()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_xpos_overflows_where_documented(policy):
    """Past its documented limit an xPos key of magnitude 1 overflows."""
    keras.config.set_dtype_policy(policy)
    try:
        layer = layers.XPos()
        # Every rotated pair (1, 0): magnitude 1 at any angle.
        keys = np.tile(np.array([1.0, 0.0], "float32"), 4).reshape(1, 1, 1, 8)
        keys = np.concatenate([keys, keys], axis=1)
        limit = XPOS_LIMIT[policy]
        inside = to_numpy(
            layer(keys, positions=np.array([0, limit - 10]), downscale=True)
        )
        outside = to_numpy(
            layer(keys, positions=np.array([0, int(limit * 1.05)]), downscale=True)
        )
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.all(np.isfinite(inside.astype("float32")))
    assert not np.all(np.isfinite(outside.astype("float32")))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize(
    "name",
    ["SinusoidalPositionEncoding", "LearnedPositionEmbedding", "RotaryEmbedding"],
)
@bounded(max_examples=2)
@given(position=st.integers(0, MAX_POSITION - 1), half_width=st.integers(1, 16))
def test_absolute_and_rotary_are_finite_under_mixed_precision(
    policy, name, position, half_width
):
    width = 2 * half_width
    keras.config.set_dtype_policy(policy)
    try:
        if name == "LearnedPositionEmbedding":
            layer = layers.LearnedPositionEmbedding(max_length=256)
            position = position % 256  # up to the table
            inputs = np.ones((1, 1, width), "float32")
        elif name == "RotaryEmbedding":
            layer = layers.RotaryEmbedding()
            inputs = np.ones((1, 1, 2, width), "float32")
        else:
            layer = layers.SinusoidalPositionEncoding()
            inputs = np.ones((1, 1, width), "float32")
        out = to_numpy(layer(inputs, positions=np.array([position])))
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.all(np.isfinite(out.astype("float32")))
    if name == "SinusoidalPositionEncoding":
        # Within the float32 angle rounding (1.2e-7 * p radians) plus the
        # rounding of values in [0, 2] to float16 or bfloat16.
        expected = 1.0 + sinusoidal_reference([position], width)
        half_ulp = 1e-3 if policy == "mixed_float16" else 8e-3
        atol = half_ulp + 1.2e-7 * position + 1e-4
        np.testing.assert_allclose(out[0].astype("float64"), expected, atol=atol)
    count()

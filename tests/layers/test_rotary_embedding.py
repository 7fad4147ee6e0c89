import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.layers import RotaryEmbedding
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test


def rope_reference(
    x,
    positions,
    rotary_dim=None,
    layout="half",
    max_wavelength=10000.0,
    inverse_frequencies=None,
    attention_factor=1.0,
):
    """Su et al. 2021 in float64: rotate each feature pair by `p * theta_i`.

    `x` is `(batch, seq, ..., width)`, `positions` `(seq,)` or `(batch, seq)`.
    Pairs are `(i, i + d/2)` for "half", `(2i, 2i + 1)` for "interleaved".
    """
    x = np.asarray(x, dtype="float64")
    d = rotary_dim or x.shape[-1]
    if inverse_frequencies is None:
        inverse_frequencies = float(max_wavelength) ** (-np.arange(0, d, 2) / d)
    positions = np.asarray(positions, dtype="float64")
    if positions.ndim == 1:
        positions = positions[None]
    angles = positions[..., None] * np.asarray(inverse_frequencies, "float64")
    # (batch or 1, seq, 1, ..., 1, d/2)
    angles = angles.reshape(angles.shape[:2] + (1,) * (x.ndim - 3) + (d // 2,))
    cos, sin = np.cos(angles), np.sin(angles)
    if layout == "half":
        first, second = x[..., : d // 2], x[..., d // 2 : d]
    else:
        first, second = x[..., 0:d:2], x[..., 1:d:2]
    new_first = (first * cos - second * sin) * attention_factor
    new_second = (second * cos + first * sin) * attention_factor
    out = np.array(
        np.broadcast_to(
            x, np.broadcast_shapes(x.shape, cos.shape[:-1] + (x.shape[-1],))
        )
    )
    if layout == "half":
        out[..., : d // 2], out[..., d // 2 : d] = new_first, new_second
    else:
        out[..., 0:d:2], out[..., 1:d:2] = new_first, new_second
    return out


def hf_dynamic_ntk_inverse_frequencies(
    base, dim, factor, max_position_embeddings, seq_len
):
    """HF transformers `_compute_dynamic_ntk_parameters`, transcribed to numpy."""
    seq_len = max(seq_len, max_position_embeddings)
    base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (
        dim / (dim - 2)
    )
    return 1.0 / (base ** (np.arange(0, dim, 2, dtype="float64") / dim))


def hf_yarn_parameters(
    base,
    dim,
    factor,
    original_max_position_embeddings,
    beta_fast=32,
    beta_slow=1,
    truncate=True,
):
    """HF transformers `_compute_yarn_parameters`, transcribed to numpy."""

    def get_mscale(scale, mscale=1):
        if scale <= 1:
            return 1.0
        return 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = get_mscale(factor)

    def find_correction_dim(num_rotations):
        return (
            dim
            * math.log(original_max_position_embeddings / (num_rotations * 2 * math.pi))
        ) / (2 * math.log(base))

    low = find_correction_dim(beta_fast)
    high = find_correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype="float64") - low) / (high - low), 0, 1)
    pos_freqs = base ** (np.arange(0, dim, 2, dtype="float64") / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    extrapolation_factor = 1 - ramp
    inv_freq = (
        inv_freq_interpolation * (1 - extrapolation_factor)
        + inv_freq_extrapolation * extrapolation_factor
    )
    return inv_freq, attention_factor


def _inputs(shape=(2, 6, 2, 8)):
    return np.random.uniform(-1, 1, shape).astype("float32")


@pytest.mark.parametrize(
    "init_kwargs, shape",
    [
        ({}, (2, 5, 2, 8)),
        ({"layout": "interleaved"}, (2, 5, 8)),
        ({"rotary_dim": 4}, (2, 5, 2, 6)),
        ({"scaling": "linear", "scaling_factor": 2.0}, (2, 5, 2, 8)),
        (
            {"scaling": "dynamic_ntk", "scaling_factor": 2.0, "original_max_length": 3},
            (2, 5, 2, 8),
        ),
        (
            {
                "scaling": "yarn",
                "scaling_factor": 4.0,
                "original_max_length": 64,
                "layout": "interleaved",
                "rotary_dim": 6,
            },
            (2, 5, 8),
        ),
    ],
)
def test_layer_harness(init_kwargs, shape, tmp_path):
    run_layer_test(
        RotaryEmbedding,
        init_kwargs=init_kwargs,
        input_data=_inputs(shape),
        expected_output_shape=shape,
        expected_num_trainable_weights=0,
        tmp_path=tmp_path,
    )


def test_layer_harness_with_start_index(tmp_path):
    run_layer_test(
        RotaryEmbedding,
        init_kwargs={"layout": "interleaved"},
        input_data=_inputs((2, 5, 8)),
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=0,
        call_kwargs={"start_index": 3},
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim", [None, 4])
@pytest.mark.parametrize("shape", [(2, 7, 3, 8), (2, 7, 10)])
def test_matches_formula(layout, rotary_dim, shape):
    x = _inputs(shape)
    layer = RotaryEmbedding(rotary_dim=rotary_dim, layout=layout, max_wavelength=500.0)
    out = to_numpy(layer(x))
    expected = rope_reference(x, np.arange(7), rotary_dim, layout, 500.0)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    out = to_numpy(layer(x, start_index=40))
    expected = rope_reference(x, np.arange(40, 47), rotary_dim, layout, 500.0)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    positions = np.array([[0, 0, 1, 2, 3, 4, 5], [9, 30, 2, 100, 7, 1000, 3]])
    out = to_numpy(layer(x, positions=positions))
    expected = rope_reference(x, positions, rotary_dim, layout, 500.0)
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_partial_rotary_passes_the_rest_through(layout):
    x = _inputs((2, 5, 2, 10))
    out = to_numpy(RotaryEmbedding(rotary_dim=6, layout=layout)(x, start_index=3))
    np.testing.assert_array_equal(out[..., 6:], x[..., 6:])
    assert np.max(np.abs(out[..., :6] - x[..., :6])) > 0.1


@pytest.mark.parametrize("start_index", [0, 13])
@pytest.mark.parametrize("shape", [(2, 9, 3, 8), (2, 9, 16)])
def test_half_layout_equals_keras_hub(start_index, shape):
    keras_hub = pytest.importorskip("keras_hub")
    x = _inputs(shape)
    ours = to_numpy(RotaryEmbedding(max_wavelength=1000.0)(x, start_index=start_index))
    theirs = to_numpy(
        keras_hub.layers.RotaryEmbedding(max_wavelength=1000.0)(
            x, start_index=start_index
        )
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    positions = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5], [0, 1, 2, 3, 4, 5, 6, 7, 8]])
    ours = to_numpy(RotaryEmbedding()(x, positions=positions))
    theirs = to_numpy(keras_hub.layers.RotaryEmbedding()(x, positions=positions))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_yarn_equals_keras_hub():
    keras_hub = pytest.importorskip("keras_hub")
    x = _inputs((2, 9, 2, 32))
    ours = RotaryEmbedding(scaling="yarn", scaling_factor=4.0, original_max_length=64)
    theirs = keras_hub.layers.RotaryEmbedding(
        rope_type="yarn", scaling_factor=4.0, original_max_position_embeddings=64
    )
    np.testing.assert_allclose(
        to_numpy(ours(x, start_index=100)),
        to_numpy(theirs(x, start_index=100)),
        atol=1e-5,
    )


def _scores(layer, query, key, query_positions, key_positions):
    """(q, k) matrix of <R(p) q_i, R(p') k_j> for one example and one head."""
    rotated_query = to_numpy(layer(query, positions=query_positions))[0]
    rotated_key = to_numpy(layer(key, positions=key_positions))[0]
    return rotated_query.astype("float64") @ rotated_key.astype("float64").T


@pytest.mark.parametrize(
    "init_kwargs",
    [
        {},
        {"layout": "interleaved"},
        {"rotary_dim": 8},
        {"scaling": "yarn", "scaling_factor": 4.0, "original_max_length": 32},
    ],
)
def test_dot_product_depends_only_on_relative_position(init_kwargs):
    layer = RotaryEmbedding(**init_kwargs)
    # The same query and key vector at every position.
    query = np.repeat(_inputs((1, 1, 16)), 4, axis=1)
    key = np.repeat(_inputs((1, 1, 16)), 4, axis=1)
    query_positions = np.array([3, 10, 50, 61])
    key_positions = np.array([0, 7, 20, 61])
    scores = _scores(layer, query, key, query_positions, key_positions)
    for shift in (1, 17, 300):
        shifted = _scores(
            layer, query, key, query_positions + shift, key_positions + shift
        )
        np.testing.assert_allclose(shifted, scores, atol=2e-4)
    # Equal relative positions give equal scores, different ones do not.
    np.testing.assert_allclose(scores[1, 1], scores[0, 0], atol=1e-5)  # 3 = 10 - 7
    assert abs(scores[0, 0] - scores[0, 1]) > 1e-3
    assert abs(scores[2, 0] - scores[0, 0]) > 1e-3


@pytest.mark.parametrize(
    "init_kwargs",
    [
        {},
        {"layout": "interleaved", "rotary_dim": 4},
        {"scaling": "linear", "scaling_factor": 3.0},
        {"scaling": "yarn", "scaling_factor": 2.0, "original_max_length": 16},
        # Within the original length dynamic NTK does not change the base.
        {"scaling": "dynamic_ntk", "scaling_factor": 2.0, "original_max_length": 9},
    ],
)
def test_step_by_step_equals_full(init_kwargs):
    x = _inputs((2, 9, 2, 6))
    layer = RotaryEmbedding(**init_kwargs)
    full = to_numpy(layer(x))
    steps = [to_numpy(layer(x[:, i : i + 1], start_index=i)) for i in range(9)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)
    # A tensor start_index, as in a compiled decoding loop.
    chunk = to_numpy(layer(x[:, 4:7], start_index=ops.convert_to_tensor(4, "int32")))
    np.testing.assert_allclose(chunk, full[:, 4:7], atol=1e-6)


def test_positions_override_start_index():
    x = _inputs((2, 5, 2, 8))
    layer = RotaryEmbedding()
    shifted = to_numpy(layer(x, start_index=7))
    by_positions = to_numpy(layer(x, start_index=0, positions=np.arange(7, 12)))
    np.testing.assert_allclose(by_positions, shifted, atol=1e-6)
    # Left padding: per-example positions.
    same = np.repeat(x[:1], 2, axis=0)
    out = to_numpy(layer(same, positions=np.array([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])))
    np.testing.assert_allclose(out[0, 2:], to_numpy(layer(same[:1, 2:]))[0], atol=1e-6)
    np.testing.assert_allclose(out[1], to_numpy(layer(same[:1]))[0], atol=1e-6)


@pytest.mark.parametrize("shape", [(None, 2, 8), (None, 8)])
def test_dynamic_sequence_length(shape):
    inputs = keras.Input(shape=shape)
    outputs = RotaryEmbedding(layout="interleaved")(inputs)
    assert tuple(outputs.shape) == (None,) + shape
    model = keras.Model(inputs, outputs)
    for length in (3, 11):
        x = _inputs((2, length) + shape[1:])
        out = model.predict(x, verbose=0)
        np.testing.assert_allclose(
            out, rope_reference(x, np.arange(length), layout="interleaved"), atol=1e-5
        )
    assert RotaryEmbedding().compute_output_shape((None, None) + shape[1:]) == (
        (None, None) + shape[1:]
    )


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_linear_scaling_equals_unscaled_with_divided_positions(layout):
    x = _inputs((2, 6, 2, 8))
    factor = 4.0
    scaled = RotaryEmbedding(layout=layout, scaling="linear", scaling_factor=factor)
    plain = RotaryEmbedding(layout=layout)
    positions = np.arange(100, 106)
    out = to_numpy(scaled(x, start_index=100))
    np.testing.assert_allclose(
        out,
        to_numpy(plain(x, positions=(positions / factor).astype("float32"))),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        out, rope_reference(x, positions / factor, layout=layout), atol=1e-5
    )


@pytest.mark.parametrize("rotary_dim", [None, 6])
def test_dynamic_ntk_matches_hf_formula(rotary_dim):
    x = _inputs((2, 6, 2, 8))
    d = rotary_dim or 8
    factor, original = 3.0, 16
    layer = RotaryEmbedding(
        rotary_dim=rotary_dim,
        scaling="dynamic_ntk",
        scaling_factor=factor,
        original_max_length=original,
    )
    # Within the original length: the plain frequencies.
    np.testing.assert_allclose(
        to_numpy(layer(x, start_index=10)),
        rope_reference(x, np.arange(10, 16), rotary_dim),
        atol=1e-5,
    )
    # Beyond it, the base grows with start_index + seq_len.
    for start in (11, 40, 1000):
        inverse = hf_dynamic_ntk_inverse_frequencies(
            10000.0, d, factor, original, start + 6
        )
        expected = rope_reference(
            x, np.arange(start, start + 6), rotary_dim, inverse_frequencies=inverse
        )
        np.testing.assert_allclose(
            to_numpy(layer(x, start_index=start)), expected, atol=1e-4
        )
    # With explicit positions the length is max(positions) + 1, over the batch.
    positions = np.array([[0, 1, 2, 3, 4, 5], [60, 61, 62, 20, 21, 22]])
    inverse = hf_dynamic_ntk_inverse_frequencies(10000.0, d, factor, original, 63)
    expected = rope_reference(x, positions, rotary_dim, inverse_frequencies=inverse)
    np.testing.assert_allclose(
        to_numpy(layer(x, positions=positions)), expected, atol=1e-5
    )


def test_dynamic_ntk_cached_decoding_differs_beyond_original_length():
    """Documented behaviour: cached keys keep the base of their step (as in HF)."""
    x = _inputs((1, 8, 1, 8))
    layer = RotaryEmbedding(
        scaling="dynamic_ntk", scaling_factor=2.0, original_max_length=4
    )
    full = to_numpy(layer(x))
    steps = np.concatenate(
        [to_numpy(layer(x[:, i : i + 1], start_index=i)) for i in range(8)], axis=1
    )
    # Up to the original length, steps equal a full pass of that length.
    np.testing.assert_allclose(steps[:, :4], to_numpy(layer(x[:, :4])), atol=1e-6)
    # A full pass of length 8 stretches the base for every position (0 turns
    # by no angle at all), while each cached step kept the base of its length.
    np.testing.assert_allclose(steps[:, 0], full[:, 0], atol=1e-6)
    for position in range(1, 7):
        assert np.max(np.abs(steps[:, position] - full[:, position])) > 1e-3
    # The last step sees the full length, so it agrees again.
    np.testing.assert_allclose(steps[:, 7], full[:, 7], atol=1e-6)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize(
    "d, factor, original", [(16, 4.0, 64), (32, 8.0, 2048), (8, 2.0, 16)]
)
def test_yarn_matches_hf_formula(layout, d, factor, original):
    x = _inputs((2, 5, 2, d))
    layer = RotaryEmbedding(
        layout=layout,
        scaling="yarn",
        scaling_factor=factor,
        original_max_length=original,
    )
    inverse, attention_factor = hf_yarn_parameters(10000.0, d, factor, original)
    for start in (0, 250):
        expected = rope_reference(
            x,
            np.arange(start, start + 5),
            layout=layout,
            inverse_frequencies=inverse,
            attention_factor=attention_factor,
        )
        np.testing.assert_allclose(
            to_numpy(layer(x, start_index=start)), expected, atol=1e-4
        )
    # The scaling is real: it differs from plain RoPE.
    plain = to_numpy(RotaryEmbedding(layout=layout)(x, start_index=250))
    assert np.max(np.abs(plain - to_numpy(layer(x, start_index=250)))) > 1e-2


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_compute_cos_sin(layout):
    layer = RotaryEmbedding(layout=layout, rotary_dim=6, dtype="mixed_bfloat16")
    layer.build((None, None, 2, 8))
    positions = np.array([[0, 1, 2], [5, 6, 700]])
    cos, sin = layer.compute_cos_sin(positions)
    assert keras.backend.standardize_dtype(cos.dtype) == "float32"
    assert tuple(cos.shape) == (2, 3, 6) and tuple(sin.shape) == (2, 3, 6)
    theta = 10000.0 ** (-np.arange(0, 6, 2) / 6)
    angles = positions[..., None] * theta
    order = (
        np.concatenate([angles, angles], -1)
        if layout == "half"
        else np.repeat(angles, 2, -1)
    )
    np.testing.assert_allclose(to_numpy(cos), np.cos(order), atol=1e-5)
    np.testing.assert_allclose(to_numpy(sin), np.sin(order), atol=1e-5)
    cos, _ = layer.compute_cos_sin(np.arange(4))
    assert tuple(cos.shape) == (4, 6)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_bfloat16_keeps_far_positions_apart(layout):
    layer = RotaryEmbedding(layout=layout, dtype="mixed_bfloat16")
    # A unit vector exactly representable in bfloat16.
    unit = np.where(np.arange(64) % 3 == 0, 0.125, -0.125).astype("float32")
    x = unit.reshape(1, 1, 64)
    out = layer(x, start_index=5000)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    out = to_numpy(ops.cast(out, "float32"))
    expected = rope_reference(x, np.array([5000]), layout=layout)
    np.testing.assert_allclose(out, expected, atol=4e-3)
    # Position 5001 is told apart.
    next_out = to_numpy(ops.cast(layer(x, start_index=5001), "float32"))
    assert np.max(np.abs(next_out - out)) > 0.05


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"max_wavelength": 0}, "max_wavelength"),
        ({"max_wavelength": -5.0}, "max_wavelength"),
        ({"max_wavelength": True}, "max_wavelength"),
        ({"max_wavelength": float("nan")}, "max_wavelength"),
        (
            {
                "max_wavelength": 1.0,
                "scaling": "yarn",
                "scaling_factor": 2.0,
                "original_max_length": 8,
            },
            "max_wavelength",
        ),
        ({"rotary_dim": 0}, "rotary_dim"),
        ({"rotary_dim": 3}, "rotary_dim"),
        ({"rotary_dim": 4.0}, "rotary_dim"),
        ({"rotary_dim": True}, "rotary_dim"),
        ({"layout": "full"}, "layout"),
        ({"scaling": "ntk_aware"}, "scaling"),
        ({"scaling": "linear", "scaling_factor": 0.5}, "scaling_factor"),
        ({"scaling": "linear", "scaling_factor": 0}, "scaling_factor"),
        ({"scaling": "linear", "scaling_factor": True}, "scaling_factor"),
        ({"scaling_factor": 2.0}, "scaling_factor"),
        (
            {"scaling": "yarn", "scaling_factor": 2.0, "original_max_length": 0},
            "original_max_length",
        ),
        (
            {"scaling": "yarn", "scaling_factor": 2.0, "original_max_length": 8.5},
            "original_max_length",
        ),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        RotaryEmbedding(**kwargs)
    assert repr(kwargs[argument] if argument in kwargs else None)[:3] in str(info.value)


@pytest.mark.parametrize("scaling", ["yarn", "dynamic_ntk"])
def test_scaling_without_original_length_raises_when_built(scaling):
    # A ready model fills the length in; a layer used alone must have it.
    layer = RotaryEmbedding(scaling=scaling, scaling_factor=2.0)
    with pytest.raises(ValueError, match="`original_max_length` is required"):
        layer(np.zeros((1, 3, 2, 4), "float32"))


def test_invalid_inputs():
    with pytest.raises(ValueError, match="rotary_dim.*feature_dim=6"):
        RotaryEmbedding(rotary_dim=8)(_inputs((2, 5, 6)))
    with pytest.raises(ValueError, match="rotary_dim=8, feature_dim=6"):
        RotaryEmbedding(rotary_dim=8).compute_output_shape((2, 5, 6))
    with pytest.raises(ValueError, match="feature_dim=7"):
        RotaryEmbedding()(_inputs((2, 5, 7)))
    with pytest.raises(ValueError, match="inputs.shape"):
        RotaryEmbedding()(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="start_index"):
        RotaryEmbedding()(_inputs(), start_index=-1)
    with pytest.raises(ValueError, match="positions"):
        RotaryEmbedding()(_inputs((2, 6, 8)), positions=np.arange(5))

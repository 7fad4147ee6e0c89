import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.layers import RotaryEmbedding
from keras_posenc.layers import XPos
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test


def xpos_reference(
    x, positions, downscale=False, max_wavelength=10000.0, scale_base=512.0, gamma=0.4
):
    """Sun et al. 2022 in float64, with the paper's un-centered positions.

    Pair `(x_2i, x_2i+1)` at position `n` is rotated by `n * theta_i` and
    scaled by `zeta_i ** (+-n / scale_base)`, `zeta_i = (2i/d + gamma)/(1 + gamma)`.
    """
    x = np.asarray(x, dtype="float64")
    d = x.shape[-1]
    i = np.arange(d // 2)
    theta = float(max_wavelength) ** (-2.0 * i / d)
    zeta = (2.0 * i / d + gamma) / (1.0 + gamma)
    positions = np.asarray(positions, dtype="float64")
    if positions.ndim == 1:
        positions = positions[None]
    # (batch or 1, seq, 1, ..., 1, d/2)
    expand = (1,) * (x.ndim - 3) + (d // 2,)
    angles = (positions[..., None] * theta).reshape(positions.shape + expand)
    exponent = positions[..., None] / scale_base * (-1.0 if downscale else 1.0)
    scale = np.power(zeta, exponent).reshape(positions.shape + expand)
    even, odd = x[..., 0::2], x[..., 1::2]
    new_even = (even * np.cos(angles) - odd * np.sin(angles)) * scale
    new_odd = (odd * np.cos(angles) + even * np.sin(angles)) * scale
    return np.stack([new_even, new_odd], axis=-1).reshape(new_even.shape[:-1] + (d,))


def _inputs(shape=(2, 6, 2, 8)):
    return np.random.uniform(-1, 1, shape).astype("float32")


@pytest.mark.parametrize(
    "init_kwargs, shape, call_kwargs",
    [
        ({}, (2, 5, 2, 8), None),
        ({}, (2, 5, 2, 8), {"downscale": True}),
        ({"scale_base": 4.0, "gamma": 0.2, "max_wavelength": 100.0}, (2, 5, 6), None),
        ({}, (2, 5, 6), {"start_index": 3, "downscale": True}),
    ],
)
def test_layer_harness(init_kwargs, shape, call_kwargs, tmp_path):
    run_layer_test(
        XPos,
        init_kwargs=init_kwargs,
        input_data=_inputs(shape),
        expected_output_shape=shape,
        expected_num_trainable_weights=0,
        call_kwargs=call_kwargs,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("downscale", [False, True])
@pytest.mark.parametrize("shape", [(2, 7, 3, 8), (2, 7, 10)])
def test_matches_formula(downscale, shape):
    x = _inputs(shape)
    kwargs = {"scale_base": 16.0, "gamma": 0.4, "max_wavelength": 500.0}
    layer = XPos(**kwargs)
    out = to_numpy(layer(x, downscale=downscale))
    expected = xpos_reference(x, np.arange(7), downscale, **kwargs)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    out = to_numpy(layer(x, start_index=40, downscale=downscale))
    expected = xpos_reference(x, np.arange(40, 47), downscale, **kwargs)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    positions = np.array([[0, 0, 1, 2, 3, 4, 5], [9, 30, 2, 100, 7, 60, 3]])
    out = to_numpy(layer(x, positions=positions, downscale=downscale))
    expected = xpos_reference(x, positions, downscale, **kwargs)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_scale_is_real_and_rotation_is_interleaved_rope():
    x = _inputs((2, 5, 2, 8))
    rope = to_numpy(RotaryEmbedding(layout="interleaved")(x, start_index=100))
    layer = XPos(scale_base=64.0)
    query = to_numpy(layer(x, start_index=100))
    key = to_numpy(layer(x, start_index=100, downscale=True))
    # The first pair (smallest zeta) shrinks for queries and grows for keys.
    zeta0 = 0.4 / 1.4
    np.testing.assert_allclose(
        query[..., :2],
        rope[..., :2] * zeta0 ** (np.arange(100, 105) / 64.0)[None, :, None, None],
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(query * key, rope * rope, rtol=1e-4, atol=1e-6)
    assert np.max(np.abs(query - rope)) > 0.1


def _scores(layer, query, key, query_positions, key_positions):
    """(q, k) matrix of <xPos_up(q, n), xPos_down(k, m)> for one example."""
    scaled_query = to_numpy(layer(query, positions=query_positions))[0]
    scaled_key = to_numpy(layer(key, positions=key_positions, downscale=True))[0]
    return scaled_query.astype("float64") @ scaled_key.astype("float64").T


def test_dot_product_depends_only_on_relative_position():
    layer = XPos(scale_base=32.0)
    query = np.repeat(_inputs((1, 1, 16)), 4, axis=1)
    key = np.repeat(_inputs((1, 1, 16)), 4, axis=1)
    query_positions = np.array([3, 10, 50, 61])
    key_positions = np.array([0, 7, 20, 61])
    scores = _scores(layer, query, key, query_positions, key_positions)
    for shift in (1, 17, 300):
        shifted = _scores(
            layer, query, key, query_positions + shift, key_positions + shift
        )
        np.testing.assert_allclose(shifted, scores, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(scores[1, 1], scores[0, 0], rtol=1e-5)  # 3 = 10 - 7
    assert abs(scores[0, 0] - scores[0, 1]) > 1e-3
    # Against the float64 formula of the product.
    expected = (
        xpos_reference(query, query_positions, scale_base=32.0)[0]
        @ xpos_reference(key, key_positions, downscale=True, scale_base=32.0)[0].T
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("downscale", [False, True])
def test_step_by_step_equals_full(downscale):
    x = _inputs((2, 9, 2, 6))
    layer = XPos(scale_base=8.0)
    full = to_numpy(layer(x, downscale=downscale))
    steps = [
        to_numpy(layer(x[:, i : i + 1], start_index=i, downscale=downscale))
        for i in range(9)
    ]
    np.testing.assert_allclose(
        np.concatenate(steps, axis=1), full, rtol=1e-6, atol=1e-6
    )
    chunk = to_numpy(
        layer(
            x[:, 4:7],
            start_index=ops.convert_to_tensor(4, "int32"),
            downscale=downscale,
        )
    )
    np.testing.assert_allclose(chunk, full[:, 4:7], rtol=1e-6, atol=1e-6)


def test_positions_override_start_index():
    x = _inputs((2, 5, 2, 8))
    layer = XPos()
    shifted = to_numpy(layer(x, start_index=7, downscale=True))
    by_positions = to_numpy(layer(x, positions=np.arange(7, 12), downscale=True))
    np.testing.assert_allclose(by_positions, shifted, atol=1e-6)
    same = np.repeat(x[:1], 2, axis=0)
    out = to_numpy(layer(same, positions=np.array([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])))
    np.testing.assert_allclose(out[0, 2:], to_numpy(layer(same[:1, 2:]))[0], atol=1e-6)
    np.testing.assert_allclose(out[1], to_numpy(layer(same[:1]))[0], atol=1e-6)


@pytest.mark.parametrize("shape", [(None, 2, 8), (None, 8)])
def test_dynamic_sequence_length(shape):
    inputs = keras.Input(shape=shape)
    outputs = XPos(scale_base=16.0)(inputs, downscale=True)
    assert tuple(outputs.shape) == (None,) + shape
    model = keras.Model(inputs, outputs)
    for length in (3, 11):
        x = _inputs((2, length) + shape[1:])
        np.testing.assert_allclose(
            model.predict(x, verbose=0),
            xpos_reference(x, np.arange(length), True, scale_base=16.0),
            rtol=1e-5,
            atol=1e-5,
        )
    assert XPos().compute_output_shape((None, None) + shape[1:]) == (
        (None, None) + shape[1:]
    )


def _first_pair_norm(layer, start_index, downscale, magnitude):
    # (magnitude, 0) in every pair, so each output pair has the norm
    # magnitude * scale.
    x = np.tile(np.array([magnitude, 0.0], "float32"), 4).reshape(1, 1, 8)
    out = to_numpy(layer(x, start_index=start_index, downscale=downscale))
    return float(np.hypot(out[0, 0, 0].astype("float64"), out[0, 0, 1]))


def test_documented_float32_range():
    layer = XPos()
    log_zeta0 = np.log(0.4 / 1.4)
    last = 35694
    # Both first-pair scales are finite nonzero normals up to the documented
    # position (a query of norm 1024 keeps normal outputs).
    for downscale, sign, magnitude in ((False, 1.0, 1024.0), (True, -1.0, 1.0)):
        norm = _first_pair_norm(layer, last, downscale, magnitude) / magnitude
        expected = np.exp(sign * last / 512.0 * log_zeta0)
        assert np.isfinite(norm) and norm >= np.finfo("float32").tiny
        np.testing.assert_allclose(norm, expected, rtol=1e-3)
    # The keys overflow from position 36,261 on.
    assert np.isfinite(_first_pair_norm(layer, 36260, True, 1.0))
    assert not np.isfinite(_first_pair_norm(layer, 36261, True, 1.0))
    # Far beyond, the queries' first pair vanishes.
    assert _first_pair_norm(layer, 60000, False, 1024.0) == 0.0


def test_bfloat16_keeps_far_positions_apart():
    layer = XPos(dtype="mixed_bfloat16")
    x = np.where(np.arange(64) % 3 == 0, 0.125, -0.125).astype("float32")
    x = x.reshape(1, 1, 64)
    out = layer(x, start_index=5000)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    out = to_numpy(ops.cast(out, "float32"))
    expected = xpos_reference(x, np.array([5000]))
    # Divided by its float64 scale (from 5e-6 to 1 here), each output is the
    # rotation of a unit vector: within bfloat16 rounding of the float64 one.
    zeta = (np.arange(32) / 32.0 + 0.4) / 1.4
    scale = np.repeat(zeta ** (5000 / 512.0), 2)
    np.testing.assert_allclose(out / scale, expected / scale, atol=4e-3)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"max_wavelength": 0}, "max_wavelength"),
        ({"max_wavelength": True}, "max_wavelength"),
        ({"scale_base": 0}, "scale_base"),
        ({"scale_base": -512.0}, "scale_base"),
        ({"scale_base": float("inf")}, "scale_base"),
        ({"gamma": -0.1}, "gamma"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": "0.4"}, "gamma"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        XPos(**kwargs)
    assert repr(kwargs[argument])[:3] in str(info.value)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="even feature_dim"):
        XPos()(_inputs((2, 5, 7)))
    with pytest.raises(ValueError, match="inputs.shape"):
        XPos().compute_output_shape((2, 5, 2, 7))
    with pytest.raises(ValueError, match="inputs.shape"):
        XPos()(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="start_index"):
        XPos()(_inputs(), start_index=-1)
    with pytest.raises(ValueError, match="positions"):
        XPos()(_inputs((2, 6, 8)), positions=np.arange(5))

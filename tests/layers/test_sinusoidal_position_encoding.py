import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.layers import SinusoidalPositionEncoding
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test
from tests.reference import sinusoidal_reference


def _inputs(batch=2, length=6, width=8):
    return np.random.uniform(-1, 1, (batch, length, width)).astype("float32")


@pytest.mark.parametrize(
    "merge, output_dim, expected_width",
    [
        ("add", None, 8),
        ("concat", None, 16),
        ("concat", 5, 13),
        (None, None, 8),
        (None, 3, 3),
    ],
)
def test_layer_harness(merge, output_dim, expected_width, tmp_path):
    run_layer_test(
        SinusoidalPositionEncoding,
        init_kwargs={"merge": merge, "output_dim": output_dim},
        input_data=_inputs(),
        expected_output_shape=(2, 6, expected_width),
        expected_num_trainable_weights=0,
        supports_masking=True,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("width", [8, 7, 1, 33])
@pytest.mark.parametrize("merge", ["add", "concat", None])
def test_matches_formula_below_512(width, merge):
    x = _inputs(batch=2, length=512, width=width)
    layer = SinusoidalPositionEncoding(merge=merge)
    out = to_numpy(layer(x))
    expected = sinusoidal_reference(np.arange(512), width)
    if merge == "add":
        out = out - x
    elif merge == "concat":
        np.testing.assert_array_equal(out[..., :width], x)
        out = out[..., width:]
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=5e-5)


@pytest.mark.parametrize("width", [64, 31])
def test_matches_formula_up_to_65536(width):
    layer = SinusoidalPositionEncoding(merge=None)
    x = np.zeros((1, 4096, width), "float32")
    worst = 0.0
    for start in range(0, 65536, 4096):
        out = to_numpy(layer(x, start_index=start))[0]
        expected = sinusoidal_reference(np.arange(start, start + 4096), width)
        worst = max(worst, float(np.max(np.abs(out - expected))))
    assert worst <= 5e-3, worst


def test_custom_positions_match_formula():
    positions = np.array([[0, 1, 2, 3, 60000], [9, 3, 3, 1000, 65535]], "int32")
    layer = SinusoidalPositionEncoding(merge=None, max_wavelength=500.0)
    out = to_numpy(layer(np.zeros((2, 5, 9), "float32"), positions=positions))
    expected = sinusoidal_reference(positions, 9, max_wavelength=500.0)
    np.testing.assert_allclose(out, expected, atol=5e-3)
    np.testing.assert_allclose(out[:, :4], expected[:, :4], atol=5e-5)


def test_bfloat16_keeps_far_positions_apart():
    layer = SinusoidalPositionEncoding(merge=None, dtype="mixed_bfloat16")
    out = layer(np.zeros((1, 1, 64), "float32"), start_index=5000)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    out = to_numpy(ops.cast(out, "float32"))[0, 0]
    expected = sinusoidal_reference(np.array([5000]), 64)[0]
    np.testing.assert_allclose(out, expected, atol=4e-3)


@pytest.mark.parametrize("merge", ["add", "concat", None])
def test_step_by_step_equals_full(merge):
    x = _inputs(batch=2, length=9, width=6)
    layer = SinusoidalPositionEncoding(merge=merge)
    full = to_numpy(layer(x))
    steps = [to_numpy(layer(x[:, i : i + 1], start_index=i)) for i in range(9)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)
    # A tensor start_index, as in a compiled decoding loop.
    chunk = to_numpy(layer(x[:, 4:7], start_index=ops.convert_to_tensor(4, "int32")))
    np.testing.assert_allclose(chunk, full[:, 4:7], atol=1e-6)


def test_positions_override_start_index():
    x = _inputs(batch=2, length=5, width=6)
    layer = SinusoidalPositionEncoding(merge=None)
    shifted = to_numpy(layer(x, start_index=7))
    by_positions = to_numpy(layer(x, start_index=0, positions=np.arange(7, 12)))
    np.testing.assert_allclose(by_positions, shifted, atol=1e-6)
    # Left padding: per-example positions.
    positions = np.array([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    out = to_numpy(layer(x, positions=positions))
    np.testing.assert_allclose(out[0, 2:], out[1, :3], atol=1e-6)


@pytest.mark.parametrize("merge, width", [("add", 6), ("concat", 12), (None, 6)])
def test_dynamic_sequence_length(merge, width):
    inputs = keras.Input(shape=(None, 6))
    outputs = SinusoidalPositionEncoding(merge=merge)(inputs)
    assert tuple(outputs.shape) == (None, None, width)
    model = keras.Model(inputs, outputs)
    for length in (3, 11):
        assert tuple(model.predict(_inputs(2, length, 6), verbose=0).shape) == (
            2,
            length,
            width,
        )
    layer = SinusoidalPositionEncoding(merge=merge)
    assert layer.compute_output_shape((None, None, 6)) == (None, None, width)


def test_drop_in_for_keras_hub_sine_position_encoding():
    keras_hub = pytest.importorskip("keras_hub")
    x = _inputs(batch=2, length=50, width=16)
    ours = to_numpy(SinusoidalPositionEncoding(merge=None)(x))
    theirs = to_numpy(keras_hub.layers.SinePositionEncoding()(x))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"max_wavelength": 0}, "max_wavelength"),
        ({"max_wavelength": -5.0}, "max_wavelength"),
        ({"max_wavelength": True}, "max_wavelength"),
        ({"max_wavelength": float("nan")}, "max_wavelength"),
        ({"merge": "sum"}, "merge"),
        ({"output_dim": 0}, "output_dim"),
        ({"output_dim": True}, "output_dim"),
        ({"output_dim": 2.5}, "output_dim"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        SinusoidalPositionEncoding(**kwargs)
    assert repr(next(iter(kwargs.values())))[:3] in str(info.value)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="output_dim"):
        SinusoidalPositionEncoding(merge="add", output_dim=4)(_inputs(width=8))
    with pytest.raises(ValueError, match="inputs.shape"):
        SinusoidalPositionEncoding()(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="start_index"):
        SinusoidalPositionEncoding()(_inputs(), start_index=-1)
    with pytest.raises(ValueError, match="positions"):
        SinusoidalPositionEncoding()(_inputs(length=6), positions=np.arange(5))
    with pytest.raises(ValueError, match="positions"):
        SinusoidalPositionEncoding()(_inputs(), positions=np.zeros((2, 6, 1), "int32"))


# Inputs of rank >= 3, the sequence on axis -2: (batch, middle, seq, dim).
POSITIONS_4D = {
    "range": None,
    "shared": np.array([4, 0, 9, 2, 7], "int32"),
    "per-example": np.array([[0, 1, 2, 3, 4], [6, 6, 2, 0, 11]], "int32"),
}


@pytest.mark.parametrize("positions", list(POSITIONS_4D))
@pytest.mark.parametrize(
    "merge, output_dim, width", [("add", None, 8), ("concat", 3, 11), (None, 5, 5)]
)
def test_rank_4_equals_rank_3_on_each_middle_index(merge, output_dim, width, positions):
    positions = POSITIONS_4D[positions]
    x = np.random.uniform(-1, 1, (2, 3, 5, 8)).astype("float32")
    layer = SinusoidalPositionEncoding(merge=merge, output_dim=output_dim)
    out = to_numpy(layer(x, start_index=2, positions=positions))
    assert out.shape == (2, 3, 5, width)
    assert layer.compute_output_shape(x.shape) == (2, 3, 5, width)
    for middle in range(3):
        rank_3 = to_numpy(layer(x[:, middle], start_index=2, positions=positions))
        np.testing.assert_allclose(out[:, middle], rank_3, atol=1e-6)


def test_rank_5_with_per_example_positions():
    x = np.random.uniform(-1, 1, (2, 3, 1, 5, 4)).astype("float32")
    positions = POSITIONS_4D["per-example"]
    layer = SinusoidalPositionEncoding(merge=None)
    out = to_numpy(layer(x, positions=positions))
    expected = sinusoidal_reference(positions, 4)[:, None, None]
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=5e-5)


@pytest.mark.parametrize("merge, width", [("add", 8), ("concat", 16), (None, 8)])
def test_rank_4_symbolic_input(merge, width):
    inputs = keras.Input(shape=(3, None, 8))
    layer = SinusoidalPositionEncoding(merge=merge)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, 3, None, width)
    assert layer.compute_output_shape((None, 3, None, 8)) == (None, 3, None, width)
    model = keras.Model(inputs, outputs)
    x = np.random.uniform(-1, 1, (2, 3, 4, 8)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), to_numpy(layer(x)))


def test_rank_2_inputs_name_the_expected_shape():
    with pytest.raises(
        ValueError,
        match=r"\(batch_size, \.\.\., sequence_length, feature_dim\).*"
        r"inputs\.shape=\(6, 8\)",
    ):
        SinusoidalPositionEncoding(merge=None)(np.zeros((6, 8), "float32"))


@pytest.mark.parametrize("positions", [None, np.array([3, 1, 4, 1, 5], "int32")])
def test_rank_4_drop_in_for_keras_hub(positions):
    keras_hub = pytest.importorskip("keras_hub")
    x = np.random.uniform(-1, 1, (2, 3, 5, 8)).astype("float32")
    kwargs = {"start_index": 2} if positions is None else {"positions": positions}
    ours = to_numpy(SinusoidalPositionEncoding(merge=None)(x, **kwargs))
    theirs = to_numpy(keras_hub.layers.SinePositionEncoding()(x, **kwargs))
    assert ours.shape == theirs.shape == (2, 3, 5, 8)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)

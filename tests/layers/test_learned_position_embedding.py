import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.layers import LearnedPositionEmbedding
from keras_posenc.layers import interpolate_position_table
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test


def _inputs(batch=2, length=6, width=8):
    return np.random.uniform(-1, 1, (batch, length, width)).astype("float32")


@pytest.mark.parametrize(
    "merge, output_dim, expected_width",
    [("add", None, 8), ("concat", None, 16), ("concat", 3, 11), (None, 5, 5)],
)
def test_layer_harness(merge, output_dim, expected_width, tmp_path):
    run_layer_test(
        LearnedPositionEmbedding,
        init_kwargs={"max_length": 10, "merge": merge, "output_dim": output_dim},
        input_data=_inputs(),
        expected_output_shape=(2, 6, expected_width),
        expected_num_trainable_weights=1,
        supports_masking=True,
        tmp_path=tmp_path,
    )


def _layer_with_table(merge="add", max_length=10, width=8):
    layer = LearnedPositionEmbedding(max_length=max_length, merge=merge)
    layer.build((None, None, width))
    table = np.random.normal(size=(max_length, width)).astype("float32")
    layer.embeddings.assign(table)
    return layer, table


@pytest.mark.parametrize("merge", ["add", "concat", None])
def test_values_are_table_rows(merge):
    layer, table = _layer_with_table(merge)
    x = _inputs(length=4)
    out = to_numpy(layer(x, start_index=3))
    expected = np.broadcast_to(table[3:7], (2, 4, 8))
    if merge == "add":
        np.testing.assert_allclose(out, x + expected, atol=1e-6)
    elif merge == "concat":
        np.testing.assert_allclose(out, np.concatenate([x, expected], -1), atol=1e-6)
    else:
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_step_by_step_and_positions_equal_full():
    layer, table = _layer_with_table(merge=None)
    x = _inputs(length=10)
    full = to_numpy(layer(x))
    steps = [to_numpy(layer(x[:, i : i + 1], start_index=i)) for i in range(10)]
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-6)
    tensor_start = layer(x[:, 2:5], start_index=ops.convert_to_tensor(2, "int32"))
    np.testing.assert_allclose(to_numpy(tensor_start), full[:, 2:5], atol=1e-6)
    positions = np.array([[0, 0, 1, 2], [5, 6, 7, 8]])
    out = to_numpy(layer(x[:, :4], positions=positions))
    np.testing.assert_allclose(out, table[positions], atol=1e-6)


def test_sequence_longer_than_table_raises_with_both_numbers():
    layer = LearnedPositionEmbedding(max_length=8)
    with pytest.raises(ValueError, match=r"start_index \(0\).*9.*max_length \(8\)"):
        layer(_inputs(length=9))
    with pytest.raises(ValueError, match=r"start_index \(5\).*4.*max_length \(8\)"):
        layer(_inputs(length=4), start_index=5)
    with pytest.raises(ValueError, match="start_index"):
        layer(_inputs(length=4), start_index=-2)


def test_positions_outside_table_raise_eagerly_and_give_nan_in_a_graph():
    layer, _ = _layer_with_table(merge=None, max_length=8)
    with pytest.raises(ValueError, match=r"\[0, 8\).*from 6 to 8"):
        layer(_inputs(length=3), positions=np.array([6, 7, 8]))
    with pytest.raises(ValueError, match=r"from -1 to 2"):
        layer(_inputs(length=4), positions=np.array([-1, 0, 1, 2]))
    out = to_numpy(layer(_inputs(length=3), start_index=ops.convert_to_tensor(6)))
    assert np.all(np.isnan(out[:, 2]))
    inputs = keras.Input((3, 8))
    positions = keras.Input((3,), dtype="int32")
    model = keras.Model([inputs, positions], layer(inputs, positions=positions))
    data = [_inputs(length=3), np.array([[6, 7, 8]] * 2)]
    if keras.backend.backend() == "torch":
        # PyTorch's `predict` runs eagerly: the values are known, so it raises.
        with pytest.raises(ValueError, match=r"from 6 to 8"):
            model.predict(data, verbose=0)
        return
    # Inside a compiled function the values are unknown: NaN, never a
    # silent reuse of the last row.
    out = model.predict(data, verbose=0)
    assert np.all(np.isfinite(out[:, :2])) and np.all(np.isnan(out[:, 2]))


def test_left_padding_numbered_by_cumsum_stays_finite_through_an_encoder():
    from keras_posenc.layers import TokenAndPositionEmbedding
    from keras_posenc.layers import TransformerEncoder

    ids = np.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]], "int32")
    mask = ids != 0
    positions = np.cumsum(mask, axis=1) - 1  # -1 at the left pads
    embedding = TokenAndPositionEmbedding(
        vocabulary_size=10,
        max_length=5,
        embedding_dim=8,
        position="learned",
        mask_zero=True,
    )
    encoder = TransformerEncoder(intermediate_dim=8, num_heads=2)
    x = embedding(ids, positions=positions)
    assert np.isfinite(to_numpy(x)).all()
    out = to_numpy(encoder(x, padding_mask=mask, positions=positions))
    assert np.isfinite(out).all()
    # The valid tokens of the left-padded row see what the same tokens see
    # unpadded: positions 0, 1, 2 and no pads.
    alone = to_numpy(
        encoder(
            embedding(ids[:1, 2:], positions=positions[:1, 2:]),
            padding_mask=mask[:1, 2:],
        )
    )
    np.testing.assert_allclose(out[0, 2:], alone[0], atol=1e-5)


def test_dynamic_sequence_length():
    inputs = keras.Input(shape=(None, 8))
    outputs = LearnedPositionEmbedding(max_length=16, merge="concat", output_dim=4)(
        inputs
    )
    assert tuple(outputs.shape) == (None, None, 12)
    model = keras.Model(inputs, outputs)
    for length in (2, 16):
        assert model.predict(_inputs(2, length, 8), verbose=0).shape == (2, length, 12)
    # Too long: JAX and PyTorch trace with the real length and raise; a
    # TensorFlow graph traced with an unknown length gives NaN. Never a silent
    # reuse of the last row.
    try:
        out = model.predict(_inputs(1, 17, 8), verbose=0)
    except ValueError as error:
        assert "max_length (16)" in str(error)
    else:
        assert np.isnan(out[0, 16, 8:]).all() and np.isfinite(out[0, :16]).all()


def test_interpolate_position_table():
    table = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 40.0]], "float32")
    grown = interpolate_position_table(table, 5)
    np.testing.assert_allclose(
        grown, [[0, 10], [0.5, 15], [1, 20], [1.5, 30], [2, 40]], atol=1e-6
    )
    np.testing.assert_array_equal(interpolate_position_table(table, 3), table)
    with pytest.raises(ValueError, match="max_length"):
        interpolate_position_table(table, 2)


@pytest.mark.parametrize("merge", ["add", "concat"])
def test_grow_keeps_trained_ends_and_interpolates(merge):
    layer, table = _layer_with_table(merge=merge, max_length=10)
    grown = layer.grow(19)
    assert grown.max_length == 19 and grown.merge == merge
    grown_table = to_numpy(grown.embeddings)
    np.testing.assert_allclose(grown_table[::2], table, atol=1e-6)
    np.testing.assert_allclose(
        grown_table[1::2], (table[:-1] + table[1:]) / 2, atol=1e-6
    )
    out = grown(_inputs(length=19))  # longer than the old table
    assert tuple(out.shape)[:2] == (2, 19)
    with pytest.raises(ValueError, match="built"):
        LearnedPositionEmbedding(max_length=4).grow(8)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"max_length": 0}, "max_length"),
        ({"max_length": -3}, "max_length"),
        ({"max_length": True}, "max_length"),
        ({"max_length": 4.0}, "max_length"),
        ({"max_length": 4, "merge": "mul"}, "merge"),
        ({"max_length": 4, "output_dim": -1}, "output_dim"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        LearnedPositionEmbedding(**kwargs)


# Inputs of rank >= 3, the sequence on axis -2: (batch, middle, seq, dim).
POSITIONS_4D = {
    "range": None,
    "shared": np.array([4, 0, 9, 2, 7], "int32"),
    "per-example": np.array([[0, 1, 2, 3, 4], [6, 6, 2, 0, 9]], "int32"),
}


@pytest.mark.parametrize("positions", list(POSITIONS_4D))
@pytest.mark.parametrize("merge", ["add", "concat", None])
def test_rank_4_equals_rank_3_on_each_middle_index(merge, positions):
    positions = POSITIONS_4D[positions]
    layer, table = _layer_with_table(merge)
    x = np.random.uniform(-1, 1, (2, 3, 5, 8)).astype("float32")
    out = to_numpy(layer(x, start_index=2, positions=positions))
    width = 16 if merge == "concat" else 8
    assert out.shape == (2, 3, 5, width)
    assert layer.compute_output_shape(x.shape) == (2, 3, 5, width)
    for middle in range(3):
        rank_3 = to_numpy(layer(x[:, middle], start_index=2, positions=positions))
        np.testing.assert_allclose(out[:, middle], rank_3, atol=1e-6)
    rows = table[2:7] if positions is None else table[positions]
    if rows.ndim == 3:
        rows = rows[:, None]  # the batch of `positions` is axis 0 of `inputs`
    if merge == "add":
        np.testing.assert_allclose(out, x + rows, atol=1e-6)
    else:
        np.testing.assert_allclose(
            out[..., -8:], np.broadcast_to(rows, (2, 3, 5, 8)), atol=1e-6
        )


def test_rank_4_symbolic_input():
    inputs = keras.Input(shape=(3, None, 8))
    layer = LearnedPositionEmbedding(max_length=6, merge="concat", output_dim=4)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, 3, None, 12)
    assert layer.compute_output_shape((None, 3, None, 8)) == (None, 3, None, 12)
    model = keras.Model(inputs, outputs)
    x = np.random.uniform(-1, 1, (2, 3, 4, 8)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), to_numpy(layer(x)))
    for merge, width in (("add", 8), (None, 8)):
        outputs = LearnedPositionEmbedding(max_length=6, merge=merge)(inputs)
        assert tuple(outputs.shape) == (None, 3, None, width)


def test_rank_2_inputs_name_the_expected_shape():
    with pytest.raises(
        ValueError,
        match=r"\(batch_size, \.\.\., sequence_length, feature_dim\).*"
        r"inputs\.shape=\(6, 8\)",
    ):
        LearnedPositionEmbedding(max_length=8, merge=None)(np.zeros((6, 8), "float32"))


@pytest.mark.parametrize("positions", [None, np.array([3, 1, 4, 1, 5], "int32")])
def test_rank_4_matches_keras_hub_position_embedding(positions):
    keras_hub = pytest.importorskip("keras_hub")
    x = np.random.uniform(-1, 1, (2, 3, 5, 8)).astype("float32")
    kwargs = {"start_index": 2} if positions is None else {"positions": positions}
    theirs_layer = keras_hub.layers.PositionEmbedding(sequence_length=10)
    theirs = to_numpy(theirs_layer(x, **kwargs))
    # Each layer has its own random table: the same shapes, and each output
    # is its own table's rows broadcast.
    layer = LearnedPositionEmbedding(max_length=10, merge=None)
    ours = to_numpy(layer(x, **kwargs))
    assert ours.shape == theirs.shape == (2, 3, 5, 8)
    ids = np.arange(2, 7) if positions is None else positions
    for out, table in ((ours, layer.embeddings), (theirs, theirs_layer.weights[0])):
        rows = to_numpy(table)[ids]
        np.testing.assert_allclose(out, np.broadcast_to(rows, out.shape), atol=1e-6)
    # With the same table, the same values.
    layer.embeddings.assign(to_numpy(theirs_layer.weights[0]))
    np.testing.assert_allclose(to_numpy(layer(x, **kwargs)), theirs, atol=1e-6)

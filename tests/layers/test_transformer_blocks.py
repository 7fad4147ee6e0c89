import numpy as np
import pytest
from keras import ops

from keras_posenc import layers
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test

SCHEMES = ["rotary", "xpos", "alibi", "t5", "shaw", None]
EXTRA_WEIGHTS = {"t5": 1, "shaw": 2}


def _x(batch=2, length=5, width=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, length, width)).astype("float32")


def test_feed_forward_harness(tmp_path):
    run_layer_test(
        layers.FeedForward,
        init_kwargs={"intermediate_dim": 16, "activation": "gelu", "dropout": 0.1},
        input_data=_x(),
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=4,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("position", SCHEMES)
@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_harness(position, normalize_first, tmp_path):
    run_layer_test(
        layers.TransformerEncoder,
        init_kwargs={
            "intermediate_dim": 16,
            "num_heads": 2,
            "position": position,
            "normalize_first": normalize_first,
        },
        input_data=_x(),
        expected_output_shape=(2, 5, 8),
        # attention 8 + two norms 4 + feed-forward 4 (+ position weights)
        expected_num_trainable_weights=16 + EXTRA_WEIGHTS.get(position, 0),
        supports_masking=True,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("position", SCHEMES)
def test_decoder_harness(position, tmp_path):
    x, memory = _x(), _x(length=7, seed=1)
    run_layer_test(
        layers.TransformerDecoder,
        init_kwargs={"intermediate_dim": 16, "num_heads": 2, "position": position},
        input_data=(x, memory),
        expected_output_shape=(2, 5, 8),
        # self-attention 8 + cross-attention 8 + three norms 6 + feed-forward 4
        expected_num_trainable_weights=26 + EXTRA_WEIGHTS.get(position, 0),
        tmp_path=tmp_path,
    )


def test_decoder_t5_uses_causal_buckets():
    decoder = layers.TransformerDecoder(intermediate_dim=16, num_heads=2, position="t5")
    decoder(_x())
    assert decoder.self_attention.position_layer.bidirectional is False


@pytest.mark.parametrize("position", SCHEMES)
@pytest.mark.parametrize("normalize_first", [False, True])
def test_decoder_cache_equals_full(position, normalize_first):
    x, memory = _x(length=6), _x(length=4, seed=1)
    decoder = layers.TransformerDecoder(
        intermediate_dim=16,
        num_heads=2,
        position=position,
        normalize_first=normalize_first,
    )
    full = to_numpy(decoder(x, memory))
    cache = ops.zeros((2, 2, 6, 2, 4))
    outputs = []
    for index in range(6):
        out, cache = decoder(
            x[:, index : index + 1],
            memory,
            self_attention_cache=cache,
            self_attention_cache_update_index=index,
        )
        outputs.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(outputs, 1), full, atol=1e-5)


@pytest.mark.parametrize("position", SCHEMES)
def test_encoder_right_padding(position):
    x = _x(length=6)
    encoder = layers.TransformerEncoder(
        intermediate_dim=16, num_heads=2, position=position
    )
    short = to_numpy(encoder(x[:, :4]))
    mask = np.array([[1, 1, 1, 1, 0, 0]] * 2, bool)
    padded = to_numpy(encoder(x, padding_mask=mask))
    np.testing.assert_allclose(padded[:, :4], short, atol=1e-5)


def test_decoder_needs_consistent_encoder_sequence():
    decoder = layers.TransformerDecoder(intermediate_dim=16, num_heads=2)
    decoder(_x(), _x(length=3))
    with pytest.raises(ValueError, match="encoder_sequence"):
        decoder(_x())


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"intermediate_dim": 0}, "intermediate_dim"),
        ({"num_heads": -2}, "num_heads"),
        ({"dropout": -0.1}, "dropout"),
        ({"normalize_first": "yes"}, "normalize_first"),
        ({"position": "sinusoidal"}, "position"),
        ({"layer_norm_epsilon": 0}, "layer_norm_epsilon"),
    ],
)
@pytest.mark.parametrize(
    "block", [layers.TransformerEncoder, layers.TransformerDecoder]
)
def test_invalid_arguments(block, kwargs, argument):
    base = {"intermediate_dim": 16, "num_heads": 2}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        block(**{**base, **kwargs})


def test_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match="num_heads"):
        layers.TransformerEncoder(intermediate_dim=16, num_heads=3)(_x())

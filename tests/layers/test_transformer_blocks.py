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


def test_encoder_returns_attention_scores_as_keras_hub():
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    encoder = layers.TransformerEncoder(intermediate_dim=8, num_heads=2, position="t5")
    plain = to_numpy(encoder(x, padding_mask=mask))
    out, scores = encoder(x, padding_mask=mask, return_attention_scores=True)
    # Equal at the real tokens (padded query rows are left undefined).
    np.testing.assert_allclose(to_numpy(out)[mask], plain[mask], atol=1e-5)
    scores = to_numpy(scores)
    assert scores.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    assert np.all(scores[0, :, :3, 3:] == 0.0)  # padded keys get no weight
    inputs = keras.Input((None, 8))
    symbolic = encoder(inputs, return_attention_scores=True)
    assert tuple(symbolic[1].shape) == (None, 2, None, None)


def test_decoder_attention_masks_as_keras_hub():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    memory = rng.normal(size=(2, 6, 8)).astype("float32")
    decoder = layers.TransformerDecoder(intermediate_dim=8, num_heads=2)
    plain = to_numpy(decoder(x, memory))
    everywhere = to_numpy(
        decoder(
            x,
            memory,
            decoder_attention_mask=np.ones((2, 4, 4), bool),
            encoder_attention_mask=np.ones((2, 4, 6), bool),
        )
    )
    np.testing.assert_allclose(everywhere, plain, atol=1e-6)
    # Hiding the last two memory slots from every query equals padding them.
    hide = np.ones((2, 4, 6), bool)
    hide[:, :, 4:] = False
    padding = np.array([[1, 1, 1, 1, 0, 0]] * 2, bool)
    np.testing.assert_allclose(
        to_numpy(decoder(x, memory, encoder_attention_mask=hide)),
        to_numpy(decoder(x, memory, encoder_padding_mask=padding)),
        atol=1e-6,
    )
    # A decoder mask that lets each token see only itself changes the later
    # tokens, not the first (which sees only itself anyway).
    alone = np.broadcast_to(np.eye(4, dtype=bool), (2, 4, 4))
    only_self = to_numpy(decoder(x, memory, decoder_attention_mask=alone))
    np.testing.assert_allclose(only_self[:, 0], plain[:, 0], atol=1e-6)
    assert not np.allclose(only_self[:, 1:], plain[:, 1:], atol=1e-4)


def test_decoder_cross_attention_cache_as_keras_hub():
    # keras-hub's protocol: fill the cross-attention cache once (update index
    # 0), then read it at every step; with encoder padding, equal to full
    # decoding, and a read cache is not recomputed from `encoder_sequence`.
    x, memory = _x(length=5), _x(length=6, seed=1)
    padding = np.array([[1, 1, 1, 1, 0, 0], [1] * 6], bool)
    decoder = layers.TransformerDecoder(
        intermediate_dim=16, num_heads=2, position="rotary"
    )
    full = to_numpy(decoder(x, memory, encoder_padding_mask=padding))
    self_cache = ops.zeros((2, 2, 5, 2, 4))
    cross_cache = ops.zeros((2, 2, 6, 2, 4))
    outputs = []
    for index in range(5):
        out, self_cache, cross_cache = decoder(
            x[:, index : index + 1],
            memory if index == 0 else np.zeros_like(memory),
            encoder_padding_mask=padding,
            self_attention_cache=self_cache,
            self_attention_cache_update_index=index,
            cross_attention_cache=cross_cache,
            cross_attention_cache_update_index=0 if index == 0 else None,
        )
        outputs.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(outputs, 1), full, atol=1e-5)
    # Padded memory slots stay hidden when the cache is read.
    changed = to_numpy(cross_cache).copy()
    changed[0, :, 4:] = 100.0
    out, _, kept = decoder(
        x[:, :1],
        memory,
        encoder_padding_mask=padding,
        self_attention_cache=ops.zeros((2, 2, 5, 2, 4)),
        self_attention_cache_update_index=0,
        cross_attention_cache=changed,
    )
    np.testing.assert_allclose(to_numpy(kept), changed)
    np.testing.assert_allclose(to_numpy(out), outputs[0], atol=1e-5)


def test_decoder_cross_attention_cache_errors():
    x, memory = _x(length=2), _x(length=3, seed=1)
    cache = ops.zeros((2, 2, 3, 2, 4))
    decoder_only = layers.TransformerDecoder(intermediate_dim=16, num_heads=2)
    decoder_only(x)
    with pytest.raises(ValueError, match="`cross_attention_cache`"):
        decoder_only(x, cross_attention_cache=cache)
    decoder = layers.TransformerDecoder(intermediate_dim=16, num_heads=2)
    before = to_numpy(decoder(x, memory))
    with pytest.raises(ValueError, match="`cross_attention_cache_update_index`"):
        decoder(
            x, memory, cross_attention_cache=cache, cross_attention_cache_update_index=1
        )
    with pytest.raises(ValueError, match="`cross_attention_cache_update_index`"):
        decoder(x, memory, cross_attention_cache_update_index=0)
    # The failed calls left the layer as it was.
    np.testing.assert_allclose(to_numpy(decoder(x, memory)), before, atol=0)


def test_feed_forward_dropout_placement_as_keras_hub():
    x = np.abs(_x(batch=4, length=16, width=8)) + 1.0
    # keras-hub's placement drops outputs (exact zeros); the intermediate one
    # drops hidden units, which leaves the outputs dense.
    for intermediate, zero_fraction in ((False, (0.3, 0.7)), (True, (0.0, 0.05))):
        layer = layers.FeedForward(
            intermediate_dim=64,
            dropout=0.5,
            intermediate_dropout=intermediate,
            bias_initializer="ones",
        )
        out = to_numpy(layer(x, training=True))
        low, high = zero_fraction
        assert low <= np.mean(out == 0.0) <= high, intermediate
        np.testing.assert_allclose(
            to_numpy(layer(x, training=False)), to_numpy(layer(x)), rtol=1e-6
        )
    # In a block, keras-hub's placement leaves the sublayer output dropout as
    # the feed-forward's only dropout; ours adds the hidden one.
    for intermediate, rate in ((False, 0.0), (True, 0.1)):
        block = layers.TransformerEncoder(
            intermediate_dim=8,
            num_heads=2,
            dropout=0.1,
            intermediate_dropout=intermediate,
        )
        block(_x())
        assert block.feed_forward.dropout == rate
        assert block.feed_forward.intermediate_dropout == intermediate
        assert block.get_config()["intermediate_dropout"] == intermediate

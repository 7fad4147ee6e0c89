import keras
import numpy as np
import pytest

from keras_posenc.models import MODEL_POSITIONS
from keras_posenc.models import Seq2SeqTransformer
from keras_posenc.utils import to_numpy
from tests.harness import backend_share

# Reversal task: source "a b c d END", target "START d c b a END";
# symbols 3..12, START = 1, END = 2, 0 is padding.
SOURCE_LENGTH = 4
NUM_SYMBOLS = 10
START = 1
END = 2
VOCABULARY_SIZE = 3 + NUM_SYMBOLS


def _model(position, **kwargs):
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        max_length=8,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
        intermediate_dim=64,
        dropout=0.0,
        position=position,
    )
    config.update(kwargs)
    return Seq2SeqTransformer(**config)


def _inputs():
    return {
        "encoder_token_ids": np.array([[3, 4, 5, 0], [6, 7, 8, 9]], "int32"),
        "decoder_token_ids": np.array([[1, 5, 4, 3, 2], [1, 9, 0, 0, 0]], "int32"),
    }


@pytest.mark.parametrize("position", MODEL_POSITIONS)
def test_output_shape_config_and_save_load(position, tmp_path):
    model = _model(position)
    inputs = _inputs()
    logits = model(inputs)
    assert tuple(logits.shape) == (2, 5, VOCABULARY_SIZE)
    assert np.all(np.isfinite(to_numpy(logits)))
    config = model.get_config()
    assert Seq2SeqTransformer.from_config(config).get_config() == config
    assert keras.saving.get_registered_object("keras_posenc>Seq2SeqTransformer") is (
        Seq2SeqTransformer
    )
    path = f"{tmp_path}/model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        to_numpy(loaded(inputs)), to_numpy(logits), atol=1e-6, rtol=0
    )


def test_inputs_as_a_list_in_order_equal_the_dict():
    # Keras' functional base would read a list in sorted-key order (decoder
    # first) and swap source and target.
    model = _model("t5", num_layers=1)
    inputs = _inputs()
    pair = [inputs["encoder_token_ids"], inputs["decoder_token_ids"]]
    expected = to_numpy(model(inputs))
    np.testing.assert_array_equal(to_numpy(model(pair)), expected)
    np.testing.assert_array_equal(to_numpy(model(tuple(pair))), expected)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(pair, inputs["decoder_token_ids"], epochs=1, verbose=0)
    np.testing.assert_allclose(
        model.predict(pair, verbose=0), to_numpy(model(inputs)), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="encoder_token_ids"):
        model([*pair, pair[0]])


@pytest.mark.parametrize("position", MODEL_POSITIONS)
def test_padding_does_not_change_real_logits(position):
    model = _model(position)
    inputs = _inputs()
    logits = to_numpy(model(inputs))
    real = inputs["decoder_token_ids"] != 0
    # Right padding of the source, masked, leaves the decoder logits alone.
    padded_source = dict(
        inputs, encoder_token_ids=np.pad(inputs["encoder_token_ids"], ((0, 0), (0, 3)))
    )
    np.testing.assert_allclose(
        to_numpy(model(padded_source))[real], logits[real], atol=1e-5, rtol=0
    )
    # Right padding of the target leaves its real positions alone.
    padded_target = dict(
        inputs, decoder_token_ids=np.pad(inputs["decoder_token_ids"], ((0, 0), (0, 2)))
    )
    np.testing.assert_allclose(
        to_numpy(model(padded_target))[:, :5][real], logits[real], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("position", MODEL_POSITIONS)
def test_cached_step_logits_equal_full_logits(position):
    model = _model(position)
    inputs = _inputs()
    full = to_numpy(model(inputs))
    source = inputs["encoder_token_ids"]
    encoder_outputs = model.encode(source)
    # (batch, num_layers, 2 or 3, max_length, num_heads, head_dim)
    cache = model.empty_cache(2, 8)
    target = inputs["decoder_token_ids"]
    steps = []
    for index in range(target.shape[1]):
        logits, _, cache = model.call_with_cache(
            target[:, index : index + 1], cache, index, encoder_outputs, source != 0
        )
        steps.append(to_numpy(logits)[:, 0])
    steps = np.stack(steps, axis=1)
    real = target != 0
    np.testing.assert_allclose(steps[real], full[real], atol=1e-5, rtol=0)


def test_generate_samplers_with_cache():
    import keras_hub

    model = _model("t5")
    sources = [[3, 4, 5, 2], [6, 7, 8, 9, 10, 2], [11, 2]]
    greedy = model.generate(sources, max_length=7)
    assert greedy.shape == (3, 7) and greedy.dtype == np.int32
    assert np.all(greedy[:, 0] == START)
    assert np.all(greedy != 0), "padding must never be generated"
    np.testing.assert_array_equal(greedy, model.generate(sources, 7, use_cache=False))

    beam = keras_hub.samplers.BeamSampler(num_beams=2)
    cached = model.generate(sources, max_length=7, sampler=beam)
    uncached = model.generate(sources, max_length=7, sampler=beam, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)

    sampled = model.generate(
        sources, max_length=7, sampler=keras_hub.samplers.TopPSampler(p=0.9, seed=3)
    )
    assert sampled.shape == (3, 7)
    assert np.all((sampled > 0) & (sampled < VOCABULARY_SIZE))

    stop = int(greedy[2, 1])
    stopped = model.generate(sources, max_length=7, stop_token_id=stop)
    assert list(stopped[2]) == [START, stop] + [0] * 5


def _reversal_data(count, rng, exclude=()):
    excluded = {tuple(row) for row in exclude}
    rows = []
    while len(rows) < count:
        symbols = rng.integers(3, 3 + NUM_SYMBOLS, size=SOURCE_LENGTH)
        if tuple(symbols) not in excluded:
            rows.append(symbols)
    symbols = np.array(rows, "int32")
    column = np.ones((count, 1), "int32")
    source = np.concatenate([symbols, END * column], axis=1)
    target = np.concatenate([START * column, symbols[:, ::-1], END * column], axis=1)
    return source, target


class _StopAtLoss(keras.callbacks.Callback):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def on_epoch_end(self, epoch, logs=None):
        if logs["loss"] < self.loss:
            self.model.stop_training = True


# Without positions the encoder sees its input as a set and cross-attention has
# no positions, so no NoPE model can reverse a sequence:
# test_nope_encoder_ignores_source_order proves it instead of training.
@pytest.mark.slow
@pytest.mark.parametrize(
    "position", backend_share([p for p in MODEL_POSITIONS if p != "none"])
)
def test_learns_to_reverse_and_cached_generation_matches(position):
    rng = np.random.default_rng(0)
    test_source, test_target = _reversal_data(48, rng)
    source, target = _reversal_data(2048, rng, exclude=test_source[:, :-1])
    model = _model(position)
    model.compile(
        optimizer=keras.optimizers.Adam(5e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        {"encoder_token_ids": source, "decoder_token_ids": target[:, :-1]},
        target[:, 1:],
        batch_size=64,
        epochs=30,
        verbose=0,
        callbacks=[_StopAtLoss(0.01)],
    )
    loss = history.history["loss"][-1]

    length = SOURCE_LENGTH + 2
    cached = model.generate(test_source, max_length=length, stop_token_id=END)
    uncached = model.generate(
        test_source, max_length=length, stop_token_id=END, use_cache=False
    )
    np.testing.assert_array_equal(cached, uncached)
    exact_match = np.mean(np.all(cached == test_target, axis=1))
    print(f"{position}: loss {loss:.4f}, exact match {exact_match:.3f}")
    assert exact_match >= 0.9, f"{position}: exact match {exact_match:.3f}"


def test_nope_encoder_ignores_source_order():
    model = _model("none")
    inputs = _inputs()
    inputs["encoder_token_ids"] = inputs["encoder_token_ids"][1:]
    inputs["decoder_token_ids"] = inputs["decoder_token_ids"][:1]
    logits = to_numpy(model(inputs))
    shuffled = dict(inputs, encoder_token_ids=inputs["encoder_token_ids"][:, ::-1])
    np.testing.assert_allclose(to_numpy(model(shuffled)), logits, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"vocabulary_size": 1}, "vocabulary_size"),
        ({"max_length": -3}, "max_length"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_layers": 1.0}, "num_layers"),
        ({"num_heads": 0}, "num_heads"),
        ({"intermediate_dim": None}, "intermediate_dim"),
        ({"dropout": -0.1}, "dropout"),
        ({"position": "absolute"}, "position"),
        ({"normalize_first": 1}, "normalize_first"),
        ({"hidden_dim": 32, "num_heads": 3}, "hidden_dim"),
        ({"hidden_dim": 6, "num_heads": 2, "position": "rotary"}, "hidden_dim"),
    ],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        _model(kwargs.pop("position", "sinusoidal"), **kwargs)


@pytest.mark.parametrize(
    "source, kwargs, name",
    [
        ([[3, 4]], {"max_length": 9}, "max_length"),
        ([[3, 4]], {"max_length": 1}, "max_length"),
        ([[3, 4, 5, 6, 7, 8, 9, 10, 11]], {}, "encoder_token_ids"),
        ([[3, 0, 4]], {}, "encoder_token_ids"),
        ([[3, -1]], {}, "encoder_token_ids"),
        ([[3, 4]], {"start_token_id": 0}, "start_token_id"),
        ([[3, 4]], {"start_token_id": VOCABULARY_SIZE}, "start_token_id"),
        ([[3, 4]], {"stop_token_id": 1.5}, "stop_token_id"),
        ([[3, 4]], {"sampler": 3}, "sampler"),
        ([[3, 4]], {"use_cache": None}, "use_cache"),
    ],
)
def test_invalid_generate_arguments(source, kwargs, name):
    model = _model("sinusoidal", num_layers=1)
    with pytest.raises(ValueError, match=f"`{name}`"):
        model.generate(source, **kwargs)

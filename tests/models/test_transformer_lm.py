import keras
import numpy as np
import pytest

from keras_posenc.models import MODEL_POSITIONS
from keras_posenc.models import TransformerLM
from keras_posenc.utils import to_numpy
from tests.harness import assert_save_load_equal
from tests.harness import backend_share

# Copy task: "a b c SEP a b c" with distinct symbols from 2..11, SEP = 1, 0 is
# padding.
COPY_LENGTH = 3
NUM_SYMBOLS = 10
SEP = 1
VOCABULARY_SIZE = 2 + NUM_SYMBOLS


def _model(position, **kwargs):
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        max_length=10,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
        intermediate_dim=64,
        dropout=0.0,
        position=position,
    )
    config.update(kwargs)
    return TransformerLM(**config)


def _prompts():
    """Right-padded prompts of lengths 3, 5 and 1."""
    return np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10], [11, 0, 0, 0, 0]], "int32")


@pytest.mark.parametrize("position", MODEL_POSITIONS)
def test_output_shape_config_and_save_load(position, tmp_path):
    model = _model(position)
    token_ids = _prompts()
    logits = model(token_ids)
    assert tuple(logits.shape) == (3, 5, VOCABULARY_SIZE)
    assert np.all(np.isfinite(to_numpy(logits)))
    config = model.get_config()
    assert TransformerLM.from_config(config).get_config() == config
    assert keras.saving.get_registered_object("keras_posenc>TransformerLM") is (
        TransformerLM
    )
    assert_save_load_equal(model, token_ids, tmp_path, atol=1e-6)


@pytest.mark.parametrize("position", MODEL_POSITIONS)
def test_right_padding_does_not_change_real_logits(position):
    model = _model(position)
    token_ids = _prompts()
    logits = to_numpy(model(token_ids))
    padded = np.pad(token_ids, ((0, 0), (0, 4)))
    padded_logits = to_numpy(model(padded))
    real = token_ids != 0
    np.testing.assert_allclose(
        padded_logits[:, :5][real], logits[real], atol=1e-5, rtol=0
    )
    # Real tokens appended after a prompt do not reach it either (causality).
    extended = token_ids.copy()
    extended[0, 3:] = [7, 8]
    np.testing.assert_allclose(
        to_numpy(model(extended))[0, :3], logits[0, :3], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("position", MODEL_POSITIONS)
def test_cached_step_logits_equal_full_logits(position):
    model = _model(position)
    token_ids = np.array([[3, 4, 5, 6, 7, 8, 9], [10, 11, 2, 3, 4, 5, 6]], "int32")
    full = to_numpy(model(token_ids))
    # (batch, num_layers, 2 or 3, max_length, num_heads, head_dim)
    cache = model.empty_cache(2, 10)
    assert tuple(cache.shape) == (2, 2, 3 if position == "forgetting" else 2, 10, 2, 16)
    steps = []
    for index in range(token_ids.shape[1]):
        logits, _, cache = model.call_with_cache(
            token_ids[:, index : index + 1], cache, index
        )
        steps.append(to_numpy(logits)[:, 0])
    np.testing.assert_allclose(np.stack(steps, axis=1), full, atol=1e-5, rtol=0)


def test_generate_samplers_with_cache():
    import keras_hub

    model = _model("rotary")
    prompts = [[3, 4, 5], [6, 7, 8, 9, 10], [11]]
    greedy = model.generate(prompts, max_length=9)
    assert greedy.shape == (3, 9) and greedy.dtype == np.int32
    np.testing.assert_array_equal(greedy[1, :5], [6, 7, 8, 9, 10])
    assert np.all(greedy != 0), "padding must never be generated"

    beam = keras_hub.samplers.BeamSampler(num_beams=2)
    cached = model.generate(prompts, max_length=9, sampler=beam)
    uncached = model.generate(prompts, max_length=9, sampler=beam, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached[1, :5], [6, 7, 8, 9, 10])

    sampled = model.generate(
        prompts, max_length=9, sampler=keras_hub.samplers.TopPSampler(p=0.9, seed=3)
    )
    assert sampled.shape == (3, 9)
    assert np.all((sampled > 0) & (sampled < VOCABULARY_SIZE))
    np.testing.assert_array_equal(sampled[0, :3], [3, 4, 5])

    # After a stop token, every later id is padding.
    stop = int(greedy[2, 1])
    stopped = model.generate(prompts, max_length=9, stop_token_id=stop)
    row = list(stopped[2])
    assert row[1] == stop and row[2:] == [0] * 7


def test_compiled_generate_equals_the_eager_step_and_reuses_its_compilation():
    import keras_hub

    model = _model("t5")
    prompts = np.array([[3, 4, 5, 0], [6, 7, 0, 0]], "int32")
    for sampler in ("greedy", keras_hub.samplers.TopKSampler(k=3, seed=1)):
        compiled = model.generate(prompts, max_length=9, sampler=sampler)
        if not isinstance(sampler, str):
            # The eager reference starts from the same seed state.
            sampler = keras_hub.samplers.TopKSampler(k=3, seed=1)
        eager = model.generate_step(
            keras.ops.convert_to_tensor(model._generation_inputs(prompts, 9, None)),
            9,
            sampler=sampler,
        )
        np.testing.assert_array_equal(compiled, to_numpy(eager))
    # One compiled function per model; a named sampler is made once, and its
    # seed state advances from call to call.
    assert model._compiled_generate_step() is model._compiled_generate_step()
    assert model._named_sampler("top_k") is model._named_sampler("top_k")
    seeded = keras_hub.samplers.TopKSampler(k=5, seed=2)
    first = model.generate(prompts, max_length=9, sampler=seeded)
    later = [model.generate(prompts, max_length=9, sampler=seeded) for _ in range(3)]
    assert any(not np.array_equal(first, other) for other in later)


def _copy_data(count, rng, exclude=()):
    rows = []
    excluded = {tuple(row) for row in exclude}
    while len(rows) < count:
        # Distinct symbols: with repeats, copying by content ("what followed
        # this token last time?") is ambiguous and only absolute positions
        # resolve it, which ALiBi and NoPE carry weakly.
        symbols = 2 + rng.choice(NUM_SYMBOLS, size=COPY_LENGTH, replace=False)
        if tuple(symbols) not in excluded:
            rows.append(np.concatenate([symbols, [SEP], symbols]))
    return np.array(rows, "int32")


class _StopAtLoss(keras.callbacks.Callback):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def on_epoch_end(self, epoch, logs=None):
        if logs["loss"] < self.loss:
            self.model.stop_training = True


@pytest.mark.slow
@pytest.mark.parametrize("position", backend_share(MODEL_POSITIONS))
def test_learns_to_copy_and_cached_generation_matches(position):
    rng = np.random.default_rng(0)
    test = _copy_data(48, rng)
    train = _copy_data(2048, rng, exclude=test[:, :COPY_LENGTH])
    x, y = train[:, :-1], train[:, 1:]
    # Only the copied half is predictable.
    weights = np.zeros(y.shape, "float32")
    weights[:, COPY_LENGTH:] = 1.0
    model = _model(position)
    model.compile(
        optimizer=keras.optimizers.Adam(5e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        x,
        y,
        sample_weight=weights,
        batch_size=64,
        epochs=30,
        verbose=0,
        callbacks=[_StopAtLoss(0.01)],
    )
    loss = history.history["loss"][-1]

    prompts = test[:, : COPY_LENGTH + 1]
    cached = model.generate(prompts, max_length=2 * COPY_LENGTH + 1)
    uncached = model.generate(prompts, max_length=2 * COPY_LENGTH + 1, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    exact_match = np.mean(np.all(cached == test, axis=1))
    print(f"{position}: loss {loss:.4f}, exact match {exact_match:.3f}")
    assert loss < 0.05, f"{position}: final loss {loss:.4f}"
    assert exact_match >= 0.9, f"{position}: exact match {exact_match:.3f}"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"vocabulary_size": 0}, "vocabulary_size"),
        ({"vocabulary_size": 1}, "vocabulary_size"),
        ({"max_length": 0}, "max_length"),
        ({"hidden_dim": 2.5}, "hidden_dim"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_heads": -1}, "num_heads"),
        ({"intermediate_dim": True}, "intermediate_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"position": "relative"}, "position"),
        ({"normalize_first": "yes"}, "normalize_first"),
        ({"hidden_dim": 30, "num_heads": 4}, "hidden_dim"),
        ({"hidden_dim": 6, "num_heads": 2, "position": "rotary"}, "hidden_dim"),
        ({"hidden_dim": 6, "num_heads": 2, "position": "xpos"}, "hidden_dim"),
    ],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        _model(kwargs.pop("position", "rotary"), **kwargs)


@pytest.mark.parametrize(
    "prompt, kwargs, name",
    [
        ([[3, 4]], {"max_length": 11}, "max_length"),
        ([[3, 4]], {"max_length": 0}, "max_length"),
        ([[3, 4, 5]], {"max_length": 2}, "prompt_ids"),
        ([[0, 0, 0]], {}, "prompt_ids"),
        ([[3, 0, 4]], {}, "prompt_ids"),
        ([[3, 40]], {}, "prompt_ids"),
        ([3, 4], {}, "prompt_ids"),
        ([[3, 4]], {"sampler": "nucleus"}, "sampler"),
        ([[3, 4]], {"stop_token_id": 0}, "stop_token_id"),
        ([[3, 4]], {"stop_token_id": VOCABULARY_SIZE}, "stop_token_id"),
        ([[3, 4]], {"use_cache": 1}, "use_cache"),
        ([[3, 4]], {"no_repeat_ngram_size": 0}, "no_repeat_ngram_size"),
        ([[3, 4]], {"no_repeat_ngram_size": 2.5}, "no_repeat_ngram_size"),
    ],
)
def test_invalid_generate_arguments(prompt, kwargs, name):
    model = _model("rotary", num_layers=1)
    with pytest.raises(ValueError, match=f"`{name}`"):
        model.generate(prompt, **kwargs)

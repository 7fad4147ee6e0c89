import contextlib
import json

import keras
import numpy as np
import pytest

from keras_posenc.models import MODEL_POSITIONS
from keras_posenc.models import TransformerClassifier
from keras_posenc.positions import ABSOLUTE_NAMES as ABSOLUTE_POSITIONS
from keras_posenc.positions import ATTENTION_NAMES as RELATIVE_POSITIONS
from keras_posenc.utils import to_numpy
from tests.harness import assert_save_load_equal
from tests.harness import backend_share

MAX_LENGTH = 8
VOCABULARY_SIZE = 11  # tokens 1..10, and 0 for padding


def _tiny(position, **kwargs):
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        num_classes=3,
        max_length=MAX_LENGTH,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
        intermediate_dim=32,
        position=position,
    )
    config.update(kwargs)
    return TransformerClassifier(**config)


def _tokens(batch, length, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, VOCABULARY_SIZE, size=(batch, length)).astype("int32")


def _right_pad(tokens, length):
    return np.pad(tokens, ((0, 0), (0, length - tokens.shape[1])))


def _left_pad(tokens, length):
    return np.pad(tokens, ((0, 0), (length - tokens.shape[1], 0)))


# === Output and padding ===


@pytest.mark.parametrize(
    "position, pooling",
    [(position, "mean") for position in MODEL_POSITIONS]
    + [(position, "first") for position in ("sinusoidal", "learned_concat", "t5")]
    + [("xpos", "first")],
)
def test_right_padding_never_changes_the_prediction(position, pooling):
    # Two blocks, so the second one attends over padded rows the first one
    # computed; default dropout (0.1), which inference must not apply.
    model = _tiny(position, pooling=pooling, normalize_first=pooling == "first")
    lengths = (5, 1, 8)  # a single-token sequence too
    sequences = [_tokens(1, length, seed=length) for length in lengths]
    padded = np.concatenate([_right_pad(s, MAX_LENGTH) for s in sequences])
    batch_outputs = to_numpy(model(padded))
    assert batch_outputs.shape == (3, 3)
    np.testing.assert_allclose(batch_outputs.sum(axis=-1), 1.0, atol=1e-6)
    for index, sequence in enumerate(sequences):
        alone = to_numpy(model(sequence))[0]
        np.testing.assert_allclose(batch_outputs[index], alone, atol=1e-5)


def test_single_token_sequence_shaw():
    model = _tiny("shaw")
    tokens = np.array([[7]], "int32")
    np.testing.assert_allclose(
        to_numpy(model(_right_pad(tokens, MAX_LENGTH))),
        to_numpy(model(tokens)),
        atol=1e-5,
    )


def test_logits_without_activation():
    model = _tiny("rotary", activation=None, dropout=0.0)
    tokens = _tokens(3, MAX_LENGTH)
    logits = to_numpy(model(tokens))
    softmax_model = _tiny("rotary", dropout=0.0)
    softmax_model.set_weights(model.get_weights())
    expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(to_numpy(softmax_model(tokens)), expected, atol=1e-6)


def test_none_with_mean_pooling_is_permutation_invariant():
    # The documented limitation of NoPE with mean pooling: order is invisible.
    model = _tiny("none")
    tokens = _tokens(3, MAX_LENGTH)
    permuted = tokens[:, np.random.default_rng(1).permutation(MAX_LENGTH)]
    np.testing.assert_allclose(
        to_numpy(model(permuted)), to_numpy(model(tokens)), atol=1e-5
    )


# Left padding shifts every real token to a later position. Relative schemes
# see only distances between real tokens (padding is masked out) and NoPE sees
# no positions, so with mean pooling their predictions do not change. Absolute
# schemes encode the shifted positions (the classifier takes no `positions`
# input to undo the shift), so the model is documented to take right padding.
@pytest.mark.parametrize("position", RELATIVE_POSITIONS + ("none",))
def test_left_padding_is_invariant_for_relative_schemes(position):
    model = _tiny(position)
    tokens = _tokens(1, 5, seed=5)
    np.testing.assert_allclose(
        to_numpy(model(_left_pad(tokens, MAX_LENGTH))),
        to_numpy(model(tokens)),
        atol=1e-5,
    )


@pytest.mark.parametrize("position", ABSOLUTE_POSITIONS)
def test_left_padding_changes_absolute_schemes(position):
    # Why the model takes right-padded inputs: this is not a bug to fix.
    model = _tiny(position)
    tokens = _tokens(1, 5, seed=5)
    difference = np.abs(
        to_numpy(model(_left_pad(tokens, MAX_LENGTH))) - to_numpy(model(tokens))
    )
    assert difference.max() > 1e-4


# === Serialization ===


def test_get_config_round_trip():
    model = _tiny(
        "t5",
        dropout=0.2,
        normalize_first=True,
        pooling="first",
        activation="sigmoid",
        name="classifier",
    )
    config = model.get_config()
    assert config == {
        "name": "classifier",
        "trainable": True,
        "dtype": keras.dtype_policies.serialize(keras.dtype_policies.get("float32")),
        "vocabulary_size": VOCABULARY_SIZE,
        "num_classes": 3,
        "max_length": MAX_LENGTH,
        "hidden_dim": 16,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_dim": 32,
        "dropout": 0.2,
        "position": "t5",
        "normalize_first": True,
        "pooling": "first",
        "activation": "sigmoid",
        "randomize_positions": None,
    }
    revived = TransformerClassifier.from_config(config)
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(model)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert isinstance(restored, TransformerClassifier)
    assert restored.get_config() == config
    name = "keras_posenc>TransformerClassifier"
    assert keras.saving.get_registered_object(name) is TransformerClassifier


@pytest.mark.parametrize("position", MODEL_POSITIONS)
def test_save_and_load(position, tmp_path):
    model = _tiny(position)
    tokens = _right_pad(_tokens(3, 6), MAX_LENGTH)
    path = assert_save_load_equal(model, tokens, tmp_path, atol=1e-6)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, TransformerClassifier)
    assert loaded.get_config() == model.get_config()


# === Invalid arguments ===


INVALID_ARGUMENTS = [
    ({"num_classes": 0}, "num_classes"),
    ({"vocabulary_size": 0}, "vocabulary_size"),
    ({"max_length": -1}, "max_length"),
    ({"num_layers": 0}, "num_layers"),
    ({"num_heads": 1.5}, "num_heads"),
    ({"intermediate_dim": True}, "intermediate_dim"),
    ({"dropout": 1.0}, "dropout"),
    ({"position": "sinusoid"}, "position"),
    ({"position": None}, "position"),
    ({"pooling": "max"}, "pooling"),
    ({"normalize_first": "yes"}, "normalize_first"),
    ({"activation": "not_an_activation"}, "activation"),
    ({"hidden_dim": 30, "num_heads": 4}, "hidden_dim"),
    ({"hidden_dim": 12, "num_heads": 4, "position": "rotary"}, "hidden_dim"),
    ({"hidden_dim": 12, "num_heads": 4, "position": "xpos"}, "hidden_dim"),
]


def test_invalid_arguments_raise_naming_the_argument():
    for kwargs, name in INVALID_ARGUMENTS:
        with pytest.raises(ValueError, match=f"`{name}"):
            _tiny(**{"position": "sinusoidal", **kwargs})


def test_odd_head_dim_is_fine_without_rotation():
    model = _tiny("alibi", hidden_dim=12, num_heads=4)
    assert tuple(model.output.shape) == (None, 3)


# === Order matters: "is the sequence sorted?" ===

# Whole batches only: a smaller last batch would compile the step again.
SORTED_TASK = dict(
    train_multisets=2048,
    test_multisets=512,
    min_length=4,
    epochs=10,
    batch_size=128,
    learning_rate=5e-3,
)


def _sorted_task(num_multisets, rng):
    """Pairs of one sorted and one unsorted order of the same random multiset.

    Label 1: sorted (non-decreasing); label 0: shuffled until unsorted. Both
    classes hold the same multisets, so token counts carry no signal.
    """
    tokens = np.zeros((2 * num_multisets, MAX_LENGTH), "int32")
    labels = np.zeros((2 * num_multisets,), "int32")
    for index in range(num_multisets):
        length = rng.integers(SORTED_TASK["min_length"], MAX_LENGTH + 1)
        multiset = np.sort(rng.integers(1, VOCABULARY_SIZE, size=length))
        while multiset[0] == multiset[-1]:  # one value only: nothing to shuffle
            multiset = np.sort(rng.integers(1, VOCABULARY_SIZE, size=length))
        shuffled = multiset.copy()
        while np.all(np.diff(shuffled) >= 0):
            rng.shuffle(shuffled)
        tokens[2 * index, :length] = multiset
        labels[2 * index] = 1
        tokens[2 * index + 1, :length] = shuffled
    return tokens, labels


@contextlib.contextmanager
def _one_torch_thread():
    # Measured: on a busy 2-core machine torch's two intra-op threads make a
    # training step of these tiny models ~15x slower (threads wait on each
    # other); one thread keeps the test within its time budget.
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _sorted_task_model(position):
    # ALiBi's slopes are fixed by num_heads (2^(-8h/n)): with 4 heads the
    # steepest is 1/4, too gentle a locality to single out a neighbour in
    # 8-token sequences; the paper uses >= 8 heads. Symmetric ALiBi also cannot
    # tell left from right (with mean pooling, a sequence and its reverse give
    # the same prediction), so it learns "monotone", faster with a second layer.
    alibi = position == "alibi"
    # Each model builds under its own name scope: in one training model, equal
    # variable paths collide in the torch backend's parameter registry and
    # some gradients are never zeroed.
    with keras.name_scope(position):
        return TransformerClassifier(
            vocabulary_size=VOCABULARY_SIZE,
            num_classes=2,
            max_length=MAX_LENGTH,
            hidden_dim=32,
            num_layers=2 if alibi else 1,
            num_heads=8 if alibi else 4,
            intermediate_dim=64,
            dropout=0.0,
            position=position,
            name=position,
        )


# The schemes this backend's pass trains; the three passes train them all.
SORTED_TASK_POSITIONS = backend_share(MODEL_POSITIONS)


def train_sorted_task(positions=SORTED_TASK_POSITIONS, seed=2024):
    """Test accuracy of a small classifier per scheme, all trained at once.

    The classifiers are the outputs of one model: their weights are disjoint,
    so the sum of their losses trains each as if alone, with one compiled
    step instead of one per scheme.
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    train_tokens, train_labels = _sorted_task(SORTED_TASK["train_multisets"], rng)
    test_tokens, test_labels = _sorted_task(SORTED_TASK["test_multisets"], rng)
    token_ids = keras.Input(shape=(MAX_LENGTH,), dtype="int32")
    outputs = {p: _sorted_task_model(p)(token_ids) for p in positions}
    model = keras.Model(token_ids, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(SORTED_TASK["learning_rate"]),
        loss={p: "sparse_categorical_crossentropy" for p in positions},
    )
    with _one_torch_thread():
        model.fit(
            train_tokens,
            {p: train_labels for p in positions},
            batch_size=SORTED_TASK["batch_size"],
            epochs=SORTED_TASK["epochs"],
            verbose=0,
        )
        predictions = model.predict(test_tokens, batch_size=1024, verbose=0)
    return {
        p: float(np.mean(np.argmax(predictions[p], axis=-1) == test_labels))
        for p in positions
    }


@pytest.fixture(scope="module")
def sorted_task_accuracies():
    return train_sorted_task()


@pytest.mark.slow
@pytest.mark.parametrize("position", SORTED_TASK_POSITIONS)
def test_sorted_task_needs_order(position, sorted_task_accuracies):
    accuracy = sorted_task_accuracies[position]
    print(f"sorted task, {position}: test accuracy {accuracy:.3f}")
    if position == "none":
        # Without positions the model sees a bag of tokens, and both classes
        # hold the same bags: chance level proves the task needs order.
        assert accuracy <= 0.65, accuracy
    else:
        assert accuracy >= 0.9, accuracy

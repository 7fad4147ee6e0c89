"""Portability: every model type x every scheme, saved here, loaded on every backend.

The suite runs once per backend. Each run saves its third of the 45 models
(3 model types x 15 schemes, taking turns so that every backend saves every
model type and every scheme), loads them back in this process and, in one
subprocess per other backend, loads all of them with `safe_mode=True`: over
the three runs, each model is saved once and loaded under each backend,
outputs equal to 1e-5.

Tampered `.keras` files (an unknown scheme, a negative size, a Python lambda,
a module path outside Keras) must fail to load with a clear error, and run no
code while failing.
"""

import json
import warnings
import zipfile

import keras
import numpy as np
import pytest

from keras_posenc import layers
from keras_posenc import models
from keras_posenc.models import MODEL_POSITIONS
from tests.hardening.counts import record
from tests.harness import BACKENDS
from tests.models.cross_backend_models import assert_models_load_across_backends

TINY = dict(
    vocabulary_size=11,
    max_length=8,
    hidden_dim=8,
    num_layers=1,
    num_heads=2,
    intermediate_dim=8,
)
MODEL_NAMES = ("TransformerClassifier", "TransformerLM", "Seq2SeqTransformer")


def tiny_model(name, position):
    config = dict(TINY, position=position)
    if name == "TransformerClassifier":
        config["num_classes"] = 3
    return getattr(models, name)(**config)


def tiny_inputs(name):
    rng = np.random.default_rng(0)
    # Right-padded, one full-length row: padding and the whole table are used.
    ids = rng.integers(1, TINY["vocabulary_size"], size=(3, TINY["max_length"]))
    ids[0, 5:] = 0
    ids = ids.astype("int32")
    if name == "Seq2SeqTransformer":
        return {"encoder_token_ids": ids, "decoder_token_ids": ids[:, ::-1].copy()}
    return ids


@pytest.mark.slow
def test_every_model_and_scheme_loads_on_every_backend(tmp_path):
    turn = BACKENDS.index(keras.backend.backend())
    saved = {}
    for i, name in enumerate(MODEL_NAMES):
        inputs = tiny_inputs(name)
        for j, position in enumerate(MODEL_POSITIONS):
            if (i + j) % len(BACKENDS) == turn:
                saved[f"{name}_{position}"] = (tiny_model(name, position), inputs)
    cells = len(saved)
    assert len(MODEL_NAMES) * len(MODEL_POSITIONS) == 45 and cells == 15
    # This backend: the other two load everything in one subprocess each.
    assert_models_load_across_backends(saved, tmp_path, atol=1e-5)
    # And this backend loads its own files back.
    for stem, (model, inputs) in saved.items():
        loaded = keras.saving.load_model(tmp_path / f"{stem}.keras", safe_mode=True)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(loaded(inputs)),
            keras.ops.convert_to_numpy(model(inputs)),
            atol=1e-5,
            rtol=0,
            err_msg=stem,
        )
    record("portability cells passed (saved here, loaded on 3 backends)", 3 * cells)


# === Tampered files ===


def rewrite_config(source, target, change):
    """Copies a `.keras` archive, applying `change` to its config.json."""
    with zipfile.ZipFile(source) as archive_in:
        with zipfile.ZipFile(target, "w") as archive_out:
            for item in archive_in.namelist():
                data = archive_in.read(item)
                if item == "config.json":
                    config = json.loads(data)
                    change(config)
                    data = json.dumps(config)
                archive_out.writestr(item, data)
    return target


def layer_configs(config):
    """The configs of the layers of a functional model config, by class name."""
    return {
        layer["class_name"]: layer["config"] for layer in config["config"]["layers"]
    }


def sentinel_lambda(path):
    """The serialized form of a lambda that writes `path` when it runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that lambdas are unsafe.
        return keras.saving.serialize_keras_object(
            lambda x: (open(path, "w").write("ran"), x)[1]
        )


@pytest.fixture
def classifier_file(tmp_path):
    model = tiny_model("TransformerClassifier", "sinusoidal")
    path = tmp_path / "classifier.keras"
    model.save(path)
    return path


@pytest.fixture
def functional_file(tmp_path):
    token_ids = keras.Input(shape=(None,), dtype="int32")
    x = layers.TokenAndPositionEmbedding(
        vocabulary_size=11, max_length=8, embedding_dim=8, position="learned"
    )(token_ids)
    x = layers.PositionalMultiHeadAttention(num_heads=2, key_dim=4, position="t5")(x, x)
    path = tmp_path / "functional.keras"
    keras.Model(token_ids, x).save(path)
    return path


def set_model_config(**values):
    return lambda config: config["config"].update(values)


def set_layer_config(class_name, **values):
    return lambda config: layer_configs(config)[class_name].update(values)


TAMPERED = [
    (
        "classifier",
        set_model_config(position="rope"),
        r"`position` must be one of \['sinusoidal'.*position='rope'",
    ),
    (
        "classifier",
        set_model_config(max_length=-1),
        r"`max_length` must be a positive integer.*max_length=-1",
    ),
    (
        "classifier",
        set_model_config(num_heads=3),
        r"`hidden_dim` must be divisible by `num_heads`",
    ),
    (
        "functional",
        set_layer_config("PositionalMultiHeadAttention", position="rope"),
        r"`position` must be one of \[.*'rotary'.*position='rope'",
    ),
    (
        "functional",
        set_layer_config("TokenAndPositionEmbedding", max_length=-5),
        r"`max_length` must be a positive integer.*max_length=-5",
    ),
    (
        "functional",
        set_layer_config("PositionalMultiHeadAttention", num_heads=0),
        r"`num_heads` must be a positive integer.*num_heads=0",
    ),
]


@pytest.mark.parametrize(
    "which, change, match", TAMPERED, ids=[f"{t[0]}-{t[2][:20]}" for t in TAMPERED]
)
def test_tampered_config_fails_with_a_clear_error(
    which, change, match, classifier_file, functional_file, tmp_path
):
    source = classifier_file if which == "classifier" else functional_file
    tampered = rewrite_config(source, tmp_path / "tampered.keras", change)
    # Keras re-raises a layer's error inside a functional model as a TypeError
    # that quotes it.
    with pytest.raises((ValueError, TypeError), match=match):
        keras.saving.load_model(tampered, safe_mode=True)


def test_lambda_in_a_model_config_is_refused_and_not_run(classifier_file, tmp_path):
    sentinel = tmp_path / "ran.txt"
    evil = sentinel_lambda(str(sentinel))
    tampered = rewrite_config(
        classifier_file, tmp_path / "tampered.keras", set_model_config(activation=evil)
    )
    with pytest.raises(ValueError) as info:
        keras.saving.load_model(tampered, safe_mode=True)
    # The classifier names its argument; Keras' refusal is the cause.
    assert "`activation`" in str(info.value)
    assert "safe_mode" in str(info.value.__cause__)
    assert not sentinel.exists()


def test_lambda_layer_in_a_functional_model_is_refused_and_not_run(
    functional_file, tmp_path
):
    sentinel = tmp_path / "ran.txt"
    evil = sentinel_lambda(str(sentinel))

    def add_lambda_layer(config):
        # Route the output through a Lambda layer that runs `evil`.
        functional = config["config"]
        last = functional["layers"][-1]["name"]
        functional["layers"].append(
            {
                "module": "keras.layers",
                "class_name": "Lambda",
                "config": {
                    "name": "evil",
                    "function": evil,
                    "arguments": {},
                    "trainable": True,
                    "dtype": "float32",
                },
                "registered_name": None,
                "name": "evil",
                "inbound_nodes": [
                    {
                        "args": [
                            {
                                "class_name": "__keras_tensor__",
                                "config": {
                                    "shape": [None, None, 8],
                                    "dtype": "float32",
                                    "keras_history": [last, 0, 0],
                                },
                            }
                        ],
                        "kwargs": {},
                    }
                ],
            }
        )
        functional["output_layers"] = [["evil", 0, 0]]

    tampered = rewrite_config(
        functional_file, tmp_path / "tampered.keras", add_lambda_layer
    )
    with pytest.raises(ValueError, match=r"lambda.*safe_mode=False"):
        keras.saving.load_model(tampered, safe_mode=True)
    assert not sentinel.exists()


def test_module_path_outside_keras_is_not_imported(classifier_file, tmp_path):
    def point_at_os_system(config):
        config.update(module="os", class_name="system", registered_name=None)
        config["config"] = {"command": f"touch {tmp_path / 'ran.txt'}"}

    tampered = rewrite_config(
        classifier_file, tmp_path / "tampered.keras", point_at_os_system
    )
    with pytest.raises(TypeError, match=r"Could not locate class 'system'"):
        keras.saving.load_model(tampered, safe_mode=True)
    assert not (tmp_path / "ran.txt").exists()


def test_lambda_in_the_compile_config_is_refused_and_not_run(tmp_path):
    model = tiny_model("TransformerClassifier", "rotary")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    source = tmp_path / "compiled.keras"
    model.save(source)
    sentinel = tmp_path / "ran.txt"
    evil = sentinel_lambda(str(sentinel))

    def set_loss(config):
        config["compile_config"]["loss"] = evil

    tampered = rewrite_config(source, tmp_path / "tampered.keras", set_loss)
    with pytest.raises(ValueError, match=r"lambda.*safe_mode=False"):
        keras.saving.load_model(tampered, safe_mode=True)
    assert not sentinel.exists()

"""`keras_posenc.positions`: one resolver for names, configs and layers."""

import json
import os

import keras
import numpy as np
import pytest

from keras_posenc import layers
from keras_posenc import models
from keras_posenc import positions
from keras_posenc.utils import to_numpy

EXPECTED = {
    "sinusoidal": (layers.SinusoidalPositionEncoding, {"merge": "add"}),
    "sinusoidal_concat": (layers.SinusoidalPositionEncoding, {"merge": "concat"}),
    "learned": (layers.LearnedPositionEmbedding, {"max_length": 8, "merge": "add"}),
    "learned_concat": (layers.LearnedPositionEmbedding, {"merge": "concat"}),
    "shaw": (layers.RelativePositionEmbedding, {"max_distance": 16}),
    "t5": (layers.T5RelativePositionBias, {"num_heads": 4, "bidirectional": True}),
    "alibi": (layers.ALiBiBias, {"num_heads": 4, "causal": False}),
    "rotary": (layers.RotaryEmbedding, {"scaling": None}),
    "xpos": (layers.XPos, {}),
    "fire": (layers.FIREBias, {"num_heads": 4}),
    "kerple": (layers.KerpleBias, {"num_heads": 4, "kind": "log"}),
    "forgetting": (layers.ForgettingBias, {"num_heads": 4}),
    "cope": (layers.ContextualPositionBias, {"num_positions": 64}),
    "mrope": (layers.MultiAxisRotaryEmbedding, {"sections": None}),
}


def test_every_name_resolves_with_its_defaults():
    assert set(positions.NAMES) == set(EXPECTED) | {"none"}
    for name, (cls, attributes) in EXPECTED.items():
        layer = positions.get(name, num_heads=4, max_length=8)
        assert type(layer) is cls, name
        for attribute, value in attributes.items():
            assert getattr(layer, attribute) == value, (name, attribute)
    assert positions.get("none") is None
    assert positions.get(None) is None
    assert positions.get("t5", num_heads=2, causal=True).bidirectional is False


def test_configs_instances_and_round_trips():
    short = {"class_name": "t5", "config": {"num_buckets": 8, "max_distance": 16}}
    layer = positions.get(short, num_heads=2)
    assert (layer.num_buckets, layer.max_distance, layer.num_heads) == (8, 16, 2)
    instance = layers.ALiBiBias(num_heads=3)
    assert positions.get(instance) is instance
    config = json.loads(json.dumps(positions.serialize(instance)))
    revived = positions.deserialize(config)
    assert type(revived) is layers.ALiBiBias and revived.get_config() == (
        instance.get_config()
    )
    assert positions.serialize("rotary") == "rotary"
    assert positions.serialize(None) == "none"
    copy = positions.clone(instance, causal=False)
    assert copy is not instance and copy.causal is False


@pytest.mark.parametrize(
    "identifier, error, match",
    [
        ("rope", ValueError, "`position` must be one of"),
        (3, ValueError, "`position` must be one of"),
        (keras.layers.Dense(2), ValueError, "`position` must be one of"),
        (
            {"class_name": "t5", "config": {"num_heads": 2, "num_bucket": 8}},
            TypeError,
            r"'num_bucket' \(did you mean 'num_buckets'\?\)",
        ),
        ("t5", ValueError, "`num_heads` is needed"),
        ("learned", ValueError, "`max_length` is needed"),
    ],
)
def test_bad_identifiers_raise_clearly(identifier, error, match):
    with pytest.raises(error, match=match):
        positions.get(identifier)


def test_unknown_defaults_are_an_error():
    with pytest.raises(TypeError, match="num_head"):
        positions.get("t5", num_head=4)


def _fit_save_load(model, inputs, targets, tmp_path):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.train_on_batch(inputs, targets))
    revived = model.__class__.from_config(model.get_config())
    assert revived.get_config() == model.get_config()
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        to_numpy(loaded(inputs)), to_numpy(model(inputs)), atol=1e-6, rtol=0
    )
    return loaded


SMALL = dict(hidden_dim=16, num_layers=2, num_heads=4, intermediate_dim=32)


def test_lm_with_yarn_rotary_layer(tmp_path):
    model = models.TransformerLM(
        vocabulary_size=20,
        max_length=10,
        position=layers.RotaryEmbedding(scaling="yarn", scaling_factor=4.0),
        **SMALL,
    )
    schemes = [layer.self_attention.position_layer for layer in model.decoder_layers]
    # YaRN without a training length takes the model's max_length.
    assert [scheme.original_max_length for scheme in schemes] == [10, 10]
    assert model.get_config()["position"]["config"]["original_max_length"] is None
    ids = np.array([[3, 4, 5, 6, 0], [7, 8, 9, 0, 0]])
    _fit_save_load(model, ids[:, :-1], ids[:, 1:], tmp_path)


def test_classifier_with_t5_layer_and_configs(tmp_path):
    t5 = layers.T5RelativePositionBias(num_heads=4, num_buckets=8, max_distance=16)
    model = models.TransformerClassifier(
        vocabulary_size=20, num_classes=3, max_length=8, position=t5, **SMALL
    )
    biases = [layer.self_attention.position_layer for layer in model.encoder_layers]
    assert all(bias.num_buckets == 8 and bias is not t5 for bias in biases)
    ids = np.array([[3, 4, 5, 0], [6, 7, 8, 9]])
    _fit_save_load(model, ids, np.array([0, 2]), tmp_path)
    # A short config reaches the same settings, and causal ALiBi a decoder.
    model = models.TransformerClassifier(
        vocabulary_size=20,
        num_classes=3,
        max_length=8,
        position={"class_name": "shaw", "config": {"max_distance": 3}},
        **SMALL,
    )
    assert model.encoder_layers[0].self_attention.position_layer.max_distance == 3
    lm = models.TransformerLM(
        vocabulary_size=20,
        max_length=8,
        position={"class_name": "alibi", "config": {"causal": True}},
        **SMALL,
    )
    assert lm.decoder_layers[1].self_attention.position_layer.causal is True


def test_seq2seq_and_embedding_take_absolute_layers(tmp_path):
    learned = layers.LearnedPositionEmbedding(max_length=8, merge="concat")
    model = models.Seq2SeqTransformer(
        vocabulary_size=20, max_length=8, position=learned, **{**SMALL, "num_layers": 1}
    )
    # A concatenated layer without its own width takes a quarter of hidden_dim.
    assert model.encoder_embedding.embedding_dim == 12
    assert model.decoder_embedding.position_embedding.output_dim == 4
    inputs = {
        "encoder_token_ids": np.array([[3, 4, 5, 0]]),
        "decoder_token_ids": np.array([[1, 6, 7]]),
    }
    _fit_save_load(model, inputs, np.array([[6, 7, 2]]), tmp_path)
    embedding = layers.TokenAndPositionEmbedding(
        vocabulary_size=10,
        max_length=8,
        embedding_dim=4,
        position=layers.SinusoidalPositionEncoding(merge="concat", output_dim=2),
    )
    assert tuple(embedding(np.array([[1, 2, 3]])).shape) == (1, 3, 6)
    assert embedding.merge == "concat"
    revived = layers.TokenAndPositionEmbedding.from_config(embedding.get_config())
    assert revived.get_config() == embedding.get_config()
    with pytest.raises(ValueError, match="`merge` contradicts"):
        layers.TokenAndPositionEmbedding(
            vocabulary_size=10,
            max_length=8,
            embedding_dim=4,
            position=layers.SinusoidalPositionEncoding(merge="concat"),
            merge="add",
        )
    with pytest.raises(ValueError, match="attention schemes belong"):
        layers.TokenAndPositionEmbedding(
            vocabulary_size=10, max_length=8, embedding_dim=4, position="rotary"
        )
    with pytest.raises(TypeError, match="'sequence_length' \\(keras-hub's name"):
        layers.TokenAndPositionEmbedding(
            vocabulary_size=10, sequence_length=8, max_length=8, embedding_dim=4
        )


@pytest.mark.parametrize("name", ["classifier", "lm", "seq2seq"])
def test_mixed_bfloat16_reaches_every_dense_layer(name):
    kwargs = dict(vocabulary_size=20, max_length=8, dtype="mixed_bfloat16", **SMALL)
    if name == "classifier":
        model = models.TransformerClassifier(num_classes=3, **kwargs)
    elif name == "lm":
        model = models.TransformerLM(**kwargs)
    else:
        model = models.Seq2SeqTransformer(**kwargs)
    output_layers = ("logits", "classification_head")

    def dense_dtypes(network):
        """Compute dtypes of the inner dense layers and of the output layer."""
        dense = [
            layer
            for layer in network._flatten_layers()
            if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))
        ]
        inner = [layer for layer in dense if layer.name not in output_layers]
        assert len(inner) >= 4 * SMALL["num_layers"]
        assert {layer.variable_dtype for layer in dense} == {"float32"}
        outer = {layer.compute_dtype for layer in dense if layer.name in output_layers}
        return {layer.compute_dtype for layer in inner}, outer

    # The output layer stays float32 (tests/models/test_mixed_precision.py).
    assert dense_dtypes(model) == ({"bfloat16"}, {"float32"})
    assert model.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"
    revived = model.__class__.from_config(model.get_config())
    assert dense_dtypes(revived) == ({"bfloat16"}, {"float32"})

"""A misspelled constructor argument of a layer is a `TypeError`, not a default.

Keras' own check raises a `ValueError` without naming what was meant; ours
names the unknown argument and the closest valid one, and keras-hub's names
(`sequence_length`, ...) point at ours.
"""

import inspect

import keras
import pytest

from keras_posenc import layers
from keras_posenc.utils.validation import constructor_arguments
from keras_posenc.utils.validation import layer_base_arguments

REQUIRED = {
    "ALiBiBias": {"num_heads": 2},
    "AttentionPosition": {},
    "ContextualPositionBias": {},
    "FIREBias": {"num_heads": 2},
    "FeedForward": {"intermediate_dim": 8},
    "ForgettingBias": {"num_heads": 2},
    "KerpleBias": {"num_heads": 2},
    "LearnedPositionEmbedding": {"max_length": 8},
    "MultiAxisRotaryEmbedding": {},
    "PositionalMultiHeadAttention": {"num_heads": 2, "key_dim": 4},
    "RandomizedPositions": {"max_position": 8},
    "RelativePositionEmbedding": {},
    "RotaryEmbedding": {},
    "SinusoidalPositionEncoding": {},
    "T5RelativePositionBias": {"num_heads": 2},
    "TokenAndPositionEmbedding": {
        "vocabulary_size": 11,
        "max_length": 8,
        "embedding_dim": 8,
    },
    "TransformerDecoder": {"intermediate_dim": 8, "num_heads": 2},
    "TransformerEncoder": {"intermediate_dim": 8, "num_heads": 2},
    "XPos": {},
}


def test_every_public_layer_is_listed():
    public = {
        name
        for name in layers.__all__
        if inspect.isclass(getattr(layers, name))
        and issubclass(getattr(layers, name), keras.layers.Layer)
    }
    assert public == set(REQUIRED)


def test_misspelled_argument_raises_naming_it_and_the_right_name():
    tried = 0
    for name, required in REQUIRED.items():
        cls = getattr(layers, name)
        arguments = constructor_arguments(cls, stop=keras.layers.Layer) + list(
            layer_base_arguments()
        )
        for argument in arguments:
            typo = argument[:-1]
            with pytest.raises(TypeError) as error:
                cls(**required, **{typo: 1})
            message = str(error.value)
            assert f"{typo!r} (did you mean {argument!r}?)" in message, (name, message)
            assert name in message
            tried += 1
    assert tried > 150


def test_keras_hub_names_point_at_ours():
    with pytest.raises(
        TypeError,
        match=r"'sequence_length' \(keras-hub's name; here it is 'max_length'\)",
    ):
        layers.TokenAndPositionEmbedding(
            vocabulary_size=11, sequence_length=8, embedding_dim=8
        )
    with pytest.raises(TypeError, match=r"'initializer' \(keras-hub's name"):
        layers.LearnedPositionEmbedding(max_length=8, initializer="zeros")


def test_user_subclass_of_attention_position_is_checked_too():
    class Window(layers.AttentionPosition):
        def __init__(self, width=2, **kwargs):
            super().__init__(**kwargs)
            self.width = width

    assert Window(width=3, name="w").width == 3
    with pytest.raises(TypeError, match=r"'widht' \(did you mean 'width'\?\)"):
        Window(widht=3)

"""A model using every absolute layer, saved here, loads equal on the other backends."""

import keras
import numpy as np
import pytest

from keras_posenc import layers
from tests.harness import assert_loads_across_backends


@pytest.mark.slow
def test_absolute_layers_load_across_backends(tmp_path):
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = layers.TokenAndPositionEmbedding(
        vocabulary_size=20,
        max_length=12,
        embedding_dim=8,
        position="learned",
        merge="concat",
        position_dim=4,
        mask_zero=True,
    )(inputs)
    x = layers.SinusoidalPositionEncoding(merge="add")(x)
    x = layers.LearnedPositionEmbedding(max_length=12, merge="concat", output_dim=3)(x)
    x = layers.SinusoidalPositionEncoding(
        merge="concat", output_dim=5, max_wavelength=100.0
    )(x)
    outputs = keras.layers.Dense(3)(x)
    model = keras.Model(inputs, outputs)
    tokens = np.random.randint(1, 20, size=(3, 10)).astype("int32")
    assert_loads_across_backends(model, tokens, tmp_path, atol=1e-5)

"""Public layers of keras_posenc."""

from keras_posenc.layers.learned_position_embedding import LearnedPositionEmbedding
from keras_posenc.layers.learned_position_embedding import interpolate_position_table
from keras_posenc.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from keras_posenc.layers.token_and_position_embedding import TokenAndPositionEmbedding

__all__ = [
    "LearnedPositionEmbedding",
    "SinusoidalPositionEncoding",
    "TokenAndPositionEmbedding",
    "interpolate_position_table",
]

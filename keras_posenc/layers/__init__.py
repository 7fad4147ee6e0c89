"""Public layers of keras_posenc."""

from keras_posenc.layers.alibi_bias import ALiBiBias
from keras_posenc.layers.alibi_bias import alibi_slopes
from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.layers.contextual_position_bias import ContextualPositionBias
from keras_posenc.layers.feed_forward import FeedForward
from keras_posenc.layers.fire_bias import FIREBias
from keras_posenc.layers.forgetting_bias import ForgettingBias
from keras_posenc.layers.kerple_bias import KerpleBias
from keras_posenc.layers.learned_position_embedding import LearnedPositionEmbedding
from keras_posenc.layers.learned_position_embedding import interpolate_position_table
from keras_posenc.layers.multi_axis_rotary_embedding import MultiAxisRotaryEmbedding
from keras_posenc.layers.positional_multi_head_attention import (
    PositionalMultiHeadAttention,
)
from keras_posenc.layers.randomized_positions import RandomizedPositions
from keras_posenc.layers.relative_position_embedding import RelativePositionEmbedding
from keras_posenc.layers.rotary_embedding import RotaryEmbedding
from keras_posenc.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from keras_posenc.layers.t5_relative_position_bias import T5RelativePositionBias
from keras_posenc.layers.t5_relative_position_bias import t5_relative_position_bucket
from keras_posenc.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_posenc.layers.transformer_decoder import TransformerDecoder
from keras_posenc.layers.transformer_encoder import TransformerEncoder
from keras_posenc.layers.xpos import XPos

__all__ = [
    "ALiBiBias",
    "AttentionPosition",
    "ContextualPositionBias",
    "FIREBias",
    "FeedForward",
    "ForgettingBias",
    "KerpleBias",
    "LearnedPositionEmbedding",
    "MultiAxisRotaryEmbedding",
    "PositionalMultiHeadAttention",
    "RandomizedPositions",
    "RelativePositionEmbedding",
    "RotaryEmbedding",
    "SinusoidalPositionEncoding",
    "T5RelativePositionBias",
    "TokenAndPositionEmbedding",
    "TransformerDecoder",
    "TransformerEncoder",
    "XPos",
    "alibi_slopes",
    "interpolate_position_table",
    "t5_relative_position_bucket",
]

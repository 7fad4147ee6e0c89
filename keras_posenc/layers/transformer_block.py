"""What the Transformer encoder and decoder blocks share: arguments and sublayers."""

import keras

from keras_posenc.layers.feed_forward import FeedForward
from keras_posenc.layers.positional_multi_head_attention import ATTENTION_POSITIONS
from keras_posenc.layers.positional_multi_head_attention import (
    PositionalMultiHeadAttention,
)
from keras_posenc.utils.masks import check_padding_mask
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_positive_float
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import check_rate


class TransformerBlock(keras.layers.Layer):
    """Base of `TransformerEncoder` and `TransformerDecoder` (not public).

    Subclasses build their sublayers with `make_attention`, `make_norm` and
    `make_feed_forward`, and chain them with `residual`.
    """

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        dropout=0.0,
        activation="relu",
        normalize_first=False,
        position=None,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        check_positive_int("intermediate_dim", intermediate_dim)
        check_positive_int("num_heads", num_heads)
        check_rate("dropout", dropout)
        check_positive_float("layer_norm_epsilon", layer_norm_epsilon)
        if not isinstance(normalize_first, bool):
            raise ValueError(
                "`normalize_first` must be a bool. "
                f"Received: normalize_first={normalize_first!r}"
            )
        if isinstance(position, dict):
            position = keras.saving.deserialize_keras_object(position)
        if not isinstance(position, keras.layers.Layer) and (
            not isinstance(position, (str, type(None)))
            or position not in ATTENTION_POSITIONS
        ):
            raise ValueError(
                "`position` must be one of "
                f"{[p for p in ATTENTION_POSITIONS if p]}, None or a position "
                f"layer instance. Received: position={position!r}"
            )
        super().__init__(**kwargs)
        self.intermediate_dim = int(intermediate_dim)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.activation = keras.activations.get(activation)
        self.normalize_first = normalize_first
        self.position = position
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def _clone(self, initializer):
        return initializer.__class__.from_config(initializer.get_config())

    def check_input_shape(self, name, shape):
        """Raises unless `shape` is `(batch, seq, hidden_dim)`, hidden_dim known."""
        shape = tuple(shape)
        if len(shape) != 3 or shape[-1] is None:
            raise ValueError(
                f"{self.__class__.__name__} expects `{name}` of shape (batch_size, "
                f"sequence_length, hidden_dim) with a known hidden_dim. "
                f"Received: {name}.shape={shape}"
            )

    def check_sequence(self, name, value, padding_mask_name, padding_mask):
        """Call-time checks of a float sequence and its padding mask."""
        self.check_input_shape(name, value.shape)
        check_float_tensor(self.__class__.__name__, name, value)
        check_padding_mask(
            padding_mask_name, padding_mask, value.shape[0], value.shape[1]
        )

    def check_hidden_dim(self, hidden_dim):
        if hidden_dim is None or hidden_dim % self.num_heads:
            raise ValueError(
                f"The width of the inputs ({hidden_dim}) must be divisible by "
                f"`num_heads`. Received: num_heads={self.num_heads}"
            )
        return hidden_dim // self.num_heads

    def make_attention(self, hidden_dim, position, name):
        return PositionalMultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.check_hidden_dim(hidden_dim),
            position=position,
            dropout=self.dropout,
            kernel_initializer=self._clone(self.kernel_initializer),
            bias_initializer=self._clone(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def make_norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def make_feed_forward(self):
        self.feed_forward_norm = self.make_norm("feed_forward_norm")
        self.feed_forward = FeedForward(
            self.intermediate_dim,
            activation=self.activation,
            dropout=self.dropout,
            kernel_initializer=self._clone(self.kernel_initializer),
            bias_initializer=self._clone(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="output_dropout"
        )

    def residual(self, x, norm, sublayer, training):
        """`norm(x + sublayer(x))`, or `x + sublayer(norm(x))` if normalize_first.

        `sublayer` returns one tensor or a tuple whose first item is the output.
        """
        y = norm(x) if self.normalize_first else x
        result = sublayer(y)
        extra = ()
        if isinstance(result, tuple):
            result, extra = result[0], result[1:]
        x = x + self.output_dropout(result, training=training)
        if not self.normalize_first:
            x = norm(x)
        return (x,) + extra if extra else x

    def feed_forward_block(self, x, training):
        return self.residual(
            x,
            self.feed_forward_norm,
            lambda y: self.feed_forward(y, training=training),
            training,
        )

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        position = self.position
        if isinstance(position, keras.layers.Layer):
            position = keras.saving.serialize_keras_object(position)
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "normalize_first": self.normalize_first,
                "position": position,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

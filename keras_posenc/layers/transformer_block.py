"""What the Transformer encoder and decoder blocks share: arguments and sublayers."""

import keras

from keras_posenc import positions as position_schemes
from keras_posenc.layers.feed_forward import FeedForward
from keras_posenc.layers.positional_multi_head_attention import (
    PositionalMultiHeadAttention,
)
from keras_posenc.utils.masks import check_padding_mask
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_layer_keyword_arguments
from keras_posenc.utils.validation import check_positive_float
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import check_rate
from keras_posenc.utils.validation import clone_initializer


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
        intermediate_dropout=False,
        **kwargs,
    ):
        check_positive_int("intermediate_dim", intermediate_dim)
        check_bool("intermediate_dropout", intermediate_dropout)
        check_positive_int("num_heads", num_heads)
        check_rate("dropout", dropout)
        check_positive_float("layer_norm_epsilon", layer_norm_epsilon)
        check_bool("normalize_first", normalize_first)
        position_layer = position_schemes.get_attention(
            position,
            num_heads=num_heads,
            causal=self.causal_position,
            dtype=kwargs.get("dtype"),
            name="position",
        )
        check_layer_keyword_arguments(self, kwargs)
        super().__init__(**kwargs)
        self.intermediate_dim = int(intermediate_dim)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.activation = keras.activations.get(activation)
        self.normalize_first = normalize_first
        # A name stays a name in the config; a layer or config is serialized.
        self.position = position if isinstance(position, str) else None
        self.position_layer = position_layer
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.intermediate_dropout = intermediate_dropout
        self.supports_masking = True

    # Whether the self-attention is causal, for schemes whose default form
    # depends on it (T5's buckets): set by the subclasses.
    causal_position = False

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
        head_dim = hidden_dim // self.num_heads
        if self.position_layer is not None:
            try:
                self.position_layer.check_attention(self.num_heads, head_dim)
            except ValueError as error:
                position = self.position or self.position_layer.name
                raise ValueError(
                    f"The head size (inputs width {hidden_dim} / `num_heads`) "
                    f"does not suit position={position!r}: {error} "
                    f"Received: num_heads={self.num_heads}"
                ) from None
        return head_dim

    def make_attention(self, hidden_dim, position, name):
        return PositionalMultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.check_hidden_dim(hidden_dim),
            position=position,
            dropout=self.dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def make_norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def make_feed_forward(self):
        self.feed_forward_norm = self.make_norm("feed_forward_norm")
        # keras-hub's placement: the block's `output_dropout` is the only
        # dropout of the feed-forward; ours also drops its hidden activations.
        self.feed_forward = FeedForward(
            self.intermediate_dim,
            activation=self.activation,
            dropout=self.dropout if self.intermediate_dropout else 0.0,
            intermediate_dropout=self.intermediate_dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
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
        if training:
            # Dropout is the identity outside training; skipping its call
            # saves Layer.__call__ (about 0.2 ms in eager PyTorch) per
            # residual and decoding step.
            result = self.output_dropout(result, training=training)
        x = x + result
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
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "normalize_first": self.normalize_first,
                "position": self.position
                or position_schemes.serialize(self.position_layer),
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "intermediate_dropout": self.intermediate_dropout,
            }
        )
        return config

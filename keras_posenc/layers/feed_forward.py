import keras

from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_layer_keyword_arguments
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import check_rate
from keras_posenc.utils.validation import clone_initializer


@keras.saving.register_keras_serializable(package="keras_posenc")
class FeedForward(keras.layers.Layer):
    """The position-wise feed-forward sublayer of a Transformer block.

    `Dense(intermediate_dim, activation) -> Dense(width of inputs) -> Dropout`,
    keras-hub's placement (its `TransformerEncoder` drops the feed-forward's
    output only), or with `intermediate_dropout=True`
    `Dense(intermediate_dim, activation) -> Dropout -> Dense(width of inputs)`,
    which drops the hidden activations instead.

    Args:
        intermediate_dim: int. Width of the hidden layer.
        activation: activation of the hidden layer. Defaults to `"relu"`.
        dropout: float in [0, 1). Dropout rate. Defaults to `0.0`.
        intermediate_dropout: bool. Apply the dropout to the hidden
            activations (after the first Dense) if True, else to the output
            (after the second Dense, as keras-hub). Defaults to `False`.
        kernel_initializer: initializer of both kernels.
        bias_initializer: initializer of both biases.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Input checks: `inputs` must be floats with at least 2 axes and a known
    last axis.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> layer = keras_posenc.layers.FeedForward(intermediate_dim=32)
    >>> tuple(layer(np.zeros((2, 5, 8), "float32")).shape)
    (2, 5, 8)
    """

    def __init__(
        self,
        intermediate_dim,
        activation="relu",
        dropout=0.0,
        intermediate_dropout=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        check_positive_int("intermediate_dim", intermediate_dim)
        check_rate("dropout", dropout)
        check_bool("intermediate_dropout", intermediate_dropout)
        check_layer_keyword_arguments(self, kwargs)
        super().__init__(**kwargs)
        self.intermediate_dim = int(intermediate_dim)
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.intermediate_dropout = intermediate_dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def _dense(self, units, activation, name):
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "FeedForward expects inputs of shape (..., feature_dim) with at "
                "least 2 axes and a known feature_dim. "
                f"Received: inputs.shape={tuple(input_shape)}"
            )
        self.intermediate_dense = self._dense(
            self.intermediate_dim, self.activation, "intermediate_dense"
        )
        self.intermediate_dense.build(input_shape)
        self.dropout_layer = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="dropout"
        )
        self.output_dense = self._dense(input_shape[-1], None, "output_dense")
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))

    def call(self, inputs, training=None):
        check_float_tensor("FeedForward", "inputs", inputs)
        x = self.intermediate_dense(inputs)
        # Dropout is the identity outside training: not called then (its
        # Layer.__call__ costs about 0.2 ms per decoding step in eager PyTorch).
        if self.intermediate_dropout and training:
            x = self.dropout_layer(x, training=training)
        x = self.output_dense(x)
        if not self.intermediate_dropout and training:
            x = self.dropout_layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
                "intermediate_dropout": self.intermediate_dropout,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

"""Base class of the layers that add a relative-position bias to attention scores."""

from keras import ops

from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.utils.positions import check_key_positions_shape
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import default_key_positions
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_positive_int


class RelativeBiasLayer(AttentionPosition):
    """Shared logic of layers whose bias depends on `key_pos - query_pos` only.

    Subclasses implement `relative_bias(relative_positions)`: given int32
    relative positions `key_pos - query_pos` of shape `(query, key)` or
    `(batch, query, key)`, it returns the float32 bias of shape
    `(num_heads, query, key)` or `(batch, num_heads, query, key)`.

    Args:
        num_heads: int. Number of attention heads (axis 1 of the scores).
    """

    def __init__(self, num_heads, **kwargs):
        check_positive_int("num_heads", num_heads)
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)

    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[1] not in (None, self.num_heads):
            raise ValueError(
                f"{self.__class__.__name__} expects attention scores of shape "
                f"(batch_size, num_heads={self.num_heads}, query_length, "
                f"key_length). Received: inputs.shape={input_shape}"
            )

    def build(self, input_shape=None):
        if input_shape is not None:
            self._check_input_shape(input_shape)

    def check_attention(self, num_heads, key_dim):
        if num_heads != self.num_heads:
            raise ValueError(
                f"{self.__class__.__name__} was created with num_heads="
                f"{self.num_heads}, but the attention has num_heads={num_heads}; "
                "create it with the attention's head count."
            )

    def build_for_attention(self, query_shape):
        if not self.built:
            self.build((None, self.num_heads, None, None))

    def relative_bias(self, relative_positions):
        raise NotImplementedError

    def compute_bias(self, query_positions, key_positions):
        """The bias for these query and key positions, in the compute dtype.

        Args:
            query_positions: integer tensor of shape `(query_length,)` or
                `(batch_size, query_length)`.
            key_positions: integer tensor of shape `(key_length,)` or
                `(batch_size, key_length)`.

        Returns:
            A tensor of shape `(1, num_heads, query_length, key_length)` when
            both position tensors are 1-D, else `(batch_size, num_heads,
            query_length, key_length)`, ready for
            `keras.ops.dot_product_attention(..., bias=...)`.
        """
        if not self.built:
            self.build()
        query_positions = ops.cast(query_positions, "int32")
        key_positions = ops.cast(key_positions, "int32")
        # (query, key) or (batch, query, key).
        relative_positions = ops.expand_dims(key_positions, -2) - ops.expand_dims(
            query_positions, -1
        )
        bias = self.relative_bias(relative_positions)
        if len(bias.shape) == 3:
            bias = ops.expand_dims(bias, 0)
        return ops.cast(bias, self.compute_dtype)

    def call(self, inputs, start_index=0, positions=None, key_positions=None):
        self._check_input_shape(inputs.shape)
        check_float_tensor(self.__class__.__name__, "inputs", inputs)
        batch_size, _, query_length, key_length = tuple(inputs.shape)
        if positions is not None:
            check_positions_shape(positions, query_length, batch_size)
        if key_positions is not None:
            check_key_positions_shape(key_positions, key_length, batch_size)
        key_positions = default_key_positions(
            positions, key_positions, query_length, key_length
        )
        shape = ops.shape(inputs)
        query_positions = position_ids(shape[2], start_index, positions)
        key_positions = position_ids(shape[3], 0, key_positions)
        return ops.add(inputs, self.compute_bias(query_positions, key_positions))

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["num_heads"] = self.num_heads
        return config

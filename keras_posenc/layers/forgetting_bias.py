import keras
from keras import ops

from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import clone_initializer


@keras.saving.register_keras_serializable(package="keras_posenc")
class ForgettingBias(AttentionPosition):
    """The forget gate of the Forgetting Transformer (Lin et al., 2025).

    A data-dependent ALiBi: each head computes a forget gate per token from
    the attention layer's inputs, `f_l = sigmoid(w_h . x_l + b_h)`, and the
    logit of query `i` for key `j <= i` gets

        bias[h, i, j] = sum_{l = j+1 .. i} log f_l = c_i - c_j,

    with `c` the cumulative sum of `log f` over the sequence. It needs no
    other position information (FoX uses no position embeddings), reads
    tokens in their slot order, and is exact under a key/value cache: the
    attention layer stores each token's `log f` in a third cache entry, as
    the paper's reference implementation (zhixuan-lin/forgetting-transformer,
    `FgateDynamicCache`) caches `log_fgate` beside keys and values. For keys
    after the query (non-causal attention, our extension) the bias is
    `-|c_i - c_j|`, the sum over the tokens between them; on causal
    attention it is the paper's formula.

    The gate projection starts as the reference's `nn.Linear` (uniform
    kernel and bias in `+-1/sqrt(dim)`) unless initializers are given; use a
    positive `bias_initializer` (e.g. `keras.initializers.Constant(4.0)`)
    to start with little forgetting.

    Args:
        num_heads: int. Number of attention heads.
        kernel_initializer: initializer of the `(dim, num_heads)` gate
            kernel. Defaults to the reference's uniform `+-1/sqrt(dim)`.
        bias_initializer: initializer of the `(num_heads,)` gate bias.
            Defaults to the same uniform range.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: `(batch, L, dim)` self-attention inputs.

    Returns:
        The `(batch, num_heads, L, L)` bias of a self-attention call.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> x = np.random.rand(2, 6, 16).astype("float32")
    >>> tuple(keras_posenc.layers.ForgettingBias(num_heads=4)(x).shape)
    (2, 4, 6, 6)
    >>> attention = keras_posenc.layers.PositionalMultiHeadAttention(
    ...     num_heads=4, key_dim=4, position="forgetting")
    >>> tuple(attention(x, x, use_causal_mask=True).shape)
    (2, 6, 16)

    References:
        - [Lin et al., 2025](https://arxiv.org/abs/2503.02130)
    """

    def __init__(
        self, num_heads, kernel_initializer=None, bias_initializer=None, **kwargs
    ):
        check_positive_int("num_heads", num_heads)
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.kernel_initializer = (
            None
            if kernel_initializer is None
            else keras.initializers.get(kernel_initializer)
        )
        self.bias_initializer = (
            None
            if bias_initializer is None
            else keras.initializers.get(bias_initializer)
        )

    @property
    def has_token_state(self):
        return True

    def check_attention(self, num_heads, key_dim):
        if num_heads != self.num_heads:
            raise ValueError(
                f"ForgettingBias(num_heads={self.num_heads}) cannot serve an "
                f"attention layer with num_heads={num_heads}."
            )

    def build_for_attention(self, query_shape):
        # The gate reads the attention inputs: built by `build_for_inputs`.
        pass

    def build_for_inputs(self, input_shape):
        if not self.built:
            self.build(input_shape)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(
                "ForgettingBias needs inputs with a known last axis. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        limit = 1.0 / float(dim) ** 0.5
        default = keras.initializers.RandomUniform(-limit, limit)
        self.gate_kernel = self.add_weight(
            name="gate_kernel",
            shape=(dim, self.num_heads),
            initializer=clone_initializer(self.kernel_initializer or default),
        )
        self.gate_bias = self.add_weight(
            name="gate_bias",
            shape=(self.num_heads,),
            initializer=clone_initializer(self.bias_initializer or default),
        )
        self.built = True

    def compute_token_state(self, inputs):
        """`log f` per token and head, `(batch, L, num_heads)`, in float32."""
        preactivation = ops.einsum(
            "bld,dh->blh",
            ops.cast(inputs, "float32"),
            ops.cast(self.gate_kernel, "float32"),
        )
        return ops.log_sigmoid(preactivation + ops.cast(self.gate_bias, "float32"))

    def compute_state_bias(self, key_state, query_slots):
        cumulative = ops.cumsum(ops.cast(key_state, "float32"), axis=1)  # (b, S, h)
        cumulative = ops.transpose(cumulative, (0, 2, 1))  # (b, h, S)
        query_cumulative = ops.take(cumulative, ops.cast(query_slots, "int32"), axis=2)
        return -ops.abs(query_cumulative[..., :, None] - cumulative[..., None, :])

    def call(self, inputs):
        check_float_tensor(self.__class__.__name__, "inputs", inputs)
        if len(inputs.shape) != 3:
            raise ValueError(
                "`inputs` must have shape (batch_size, length, dim). Received: "
                f"inputs.shape={tuple(inputs.shape)}"
            )
        bias = self.compute_state_bias(
            self.compute_token_state(inputs), ops.arange(ops.shape(inputs)[1])
        )
        return ops.cast(bias, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_heads, input_shape[1], input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "kernel_initializer": None
                if self.kernel_initializer is None
                else keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": None
                if self.bias_initializer is None
                else keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

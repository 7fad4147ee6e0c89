import keras
from keras import ops

from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.utils.validation import check_positive_float
from keras_posenc.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_posenc")
class FIREBias(AttentionPosition):
    """FIRE: a learned function of the normalized distance (Li et al., 2023).

    `bias[h, i, j] = f(psi(i - j) / psi(max(L, i)))[h]`, with
    `psi(x) = log(c |x| + 1)`, `i` and `j` the query and key positions, `f`
    an MLP `1 -> mlp_width -> num_heads` with ReLU, and the log scale `c` and
    the threshold `L = |multiplier * initial_threshold|` learned. Dividing
    by `psi(max(L, i))` maps every distance into `[0, 1]` ("progressive
    interpolation"), so the MLP sees the inputs of its training range at any
    length: the position scheme of the best published length generalization
    (Zhou et al., 2024).

    As the reference implementation of McLeish et al. (2024,
    `cramming/architectures/embeddings.py`, `FIRE`): `c` starts at
    `initial_scale`, `L` at `initial_threshold` (a learned multiplier of a
    fixed value), and `eps` keeps the denominator positive.

    Args:
        num_heads: int. Number of attention heads.
        mlp_width: int. Hidden width of the MLP. Defaults to `32`.
        initial_scale: float. Initial `c`. Defaults to `0.1`.
        initial_threshold: float. Initial `L`. Defaults to `512.0`.
        epsilon: float. Added to the denominator. Defaults to `1e-6`.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> fire = keras_posenc.layers.FIREBias(num_heads=4)
    >>> positions = np.arange(6)
    >>> tuple(fire.compute_bias(positions, positions).shape)
    (1, 4, 6, 6)

    References:
        - [Li et al., 2023](https://arxiv.org/abs/2310.04418)
        - [Zhou et al., 2024](https://arxiv.org/abs/2402.09371)
    """

    def __init__(
        self,
        num_heads,
        mlp_width=32,
        initial_scale=0.1,
        initial_threshold=512.0,
        epsilon=1e-6,
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        check_positive_int("mlp_width", mlp_width)
        check_positive_float("initial_scale", initial_scale)
        check_positive_float("initial_threshold", initial_threshold)
        check_positive_float("epsilon", epsilon)
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_width = int(mlp_width)
        self.initial_scale = float(initial_scale)
        self.initial_threshold = float(initial_threshold)
        self.epsilon = float(epsilon)
        self.hidden = keras.layers.Dense(
            self.mlp_width, activation="relu", dtype=self.dtype_policy, name="hidden"
        )
        self.head_bias = keras.layers.Dense(
            self.num_heads, dtype=self.dtype_policy, name="head_bias"
        )

    def check_attention(self, num_heads, key_dim):
        if num_heads != self.num_heads:
            raise ValueError(
                f"FIREBias was created with num_heads={self.num_heads}, but the "
                f"attention has num_heads={num_heads}; create it with the "
                "attention's head count."
            )

    def build(self, input_shape=None):
        self.scale = self.add_weight(
            name="scale",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_scale),
        )
        self.threshold_multiplier = self.add_weight(
            name="threshold_multiplier",
            shape=(),
            initializer=keras.initializers.Constant(1.0),
        )
        self.hidden.build((None, 1))
        self.head_bias.build((None, self.mlp_width))

    def compute_bias(self, query_positions, key_positions):
        if not self.built:
            self.build()
        query_positions = ops.cast(query_positions, "float32")
        key_positions = ops.cast(key_positions, "float32")
        scale = ops.cast(self.scale, "float32")
        threshold = ops.abs(
            ops.cast(self.threshold_multiplier, "float32") * self.initial_threshold
        )
        # (query, key) or (batch, query, key)
        distance = ops.expand_dims(query_positions, -1) - ops.expand_dims(
            key_positions, -2
        )
        normalizer = ops.expand_dims(ops.maximum(query_positions, threshold), -1)
        distance = ops.log(ops.abs(scale * distance) + 1.0)
        normalizer = ops.log(ops.abs(scale * normalizer) + 1.0) + self.epsilon
        normalized = ops.expand_dims(distance / normalizer, -1)
        # (..., query, key, heads) -> (..., heads, query, key)
        bias = ops.moveaxis(self.head_bias(self.hidden(normalized)), -1, -3)
        if len(bias.shape) == 3:
            bias = ops.expand_dims(bias, 0)
        return ops.cast(bias, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_width": self.mlp_width,
                "initial_scale": self.initial_scale,
                "initial_threshold": self.initial_threshold,
                "epsilon": self.epsilon,
            }
        )
        return config

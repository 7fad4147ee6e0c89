import keras
from keras import ops

from keras_posenc.layers.relative_bias_layer import RelativeBiasLayer
from keras_posenc.utils.validation import check_one_of

KERPLE_KINDS = ("log", "power")
# The reference implementation keeps both parameters above this (and the
# power's exponent at most 2, where the kernel stays conditionally positive
# definite).
KERPLE_EPSILON = 1e-2


@keras.saving.register_keras_serializable(package="keras_posenc")
class KerpleBias(RelativeBiasLayer):
    """KERPLE: a learned, kernelized distance bias per head (Chi et al., 2022).

    With `d = |key_pos[j] - query_pos[i]|` and two learned positive scalars
    per head:

    - `kind="log"`: `bias[h, i, j] = -r1_h * log(1 + r2_h * d)`;
    - `kind="power"`: `bias[h, i, j] = -r1_h * d ** r2_h`, `0 < r2_h <= 2`.

    As in the paper's reference implementation (chijames/KERPLE), `r1` and
    `r2` are clamped to at least `0.01` (and the power's `r2` to at most 2)
    when used, and start uniform: `r1` in `[0, 2)` and `r2` in `[0, 1)` for
    `"log"`, `r1` in `[0, 1)` and `r2` in `[0, 2)` for `"power"`. The bias
    depends on the distance only, so it extrapolates to any length; like
    ALiBi it is meant for causal attention (combine it with a causal mask)
    and is symmetric for encoders.

    Args:
        num_heads: int. Number of attention heads.
        kind: `"log"` or `"power"`. Defaults to `"log"`, the variant with the
            best extrapolation in the paper.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: attention scores `(batch_size, num_heads, query_length,
            key_length)`.
        start_index, positions, key_positions: as for `ALiBiBias`.

    Returns:
        `inputs + bias`; `compute_bias(query_positions, key_positions)`
        returns the `(1 or batch_size, num_heads, T, S)` bias alone.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> layer = keras_posenc.layers.KerpleBias(num_heads=4, kind="power")
    >>> tuple(layer(np.zeros((2, 4, 5, 5), "float32")).shape)
    (2, 4, 5, 5)

    References:
        - [Chi et al., 2022](https://arxiv.org/abs/2205.09921)
    """

    def __init__(self, num_heads, kind="log", **kwargs):
        check_one_of("kind", kind, KERPLE_KINDS)
        super().__init__(num_heads=num_heads, **kwargs)
        self.kind = kind

    def build(self, input_shape=None):
        super().build(input_shape)
        scale_max, exponent_max = (2.0, 1.0) if self.kind == "log" else (1.0, 2.0)
        self.scale = self.add_weight(
            name="scale",
            shape=(self.num_heads,),
            initializer=keras.initializers.RandomUniform(0.0, scale_max),
        )
        self.exponent = self.add_weight(
            name="exponent",
            shape=(self.num_heads,),
            initializer=keras.initializers.RandomUniform(0.0, exponent_max),
        )

    def relative_bias(self, relative_positions):
        # (..., 1, query, key)
        distance = ops.expand_dims(ops.abs(ops.cast(relative_positions, "float32")), -3)
        scale = ops.maximum(ops.cast(self.scale, "float32"), KERPLE_EPSILON)
        exponent = ops.maximum(ops.cast(self.exponent, "float32"), KERPLE_EPSILON)
        scale, exponent = scale[:, None, None], exponent[:, None, None]
        if self.kind == "log":
            return -scale * ops.log1p(exponent * distance)
        return -scale * ops.power(distance, ops.minimum(exponent, 2.0))

    def get_config(self):
        config = super().get_config()
        config["kind"] = self.kind
        return config

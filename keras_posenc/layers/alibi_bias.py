import math

import keras
import numpy as np
from keras import ops

from keras_posenc.layers.relative_bias_layer import RelativeBiasLayer
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_positive_int


def alibi_slopes(num_heads):
    """The per-head ALiBi slopes of Press et al. (2022), shape `(num_heads,)`.

    For a power of two `n`, the geometric sequence `2^(-8/n), 2^(-16/n), ...,
    2^(-8)`. Otherwise the slopes of the closest smaller power of two `c`,
    followed by every other slope of `2c` for the `n - c` remaining heads, as
    in the paper's reference `get_slopes`.

    Args:
        num_heads: int. Number of attention heads.

    Returns:
        A float32 numpy array of shape `(num_heads,)`.
    """
    check_positive_int("num_heads", num_heads)
    num_heads = int(num_heads)

    def power_of_two_slopes(n):
        # Computed in float64, like the reference's Python floats.
        return np.power(2.0, -8.0 / n) ** np.arange(1, n + 1, dtype="float64")

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two_slopes(closest)
    if closest != num_heads:
        extra = power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
        slopes = np.concatenate([slopes, extra])
    return slopes.astype("float32")


@keras.saving.register_keras_serializable(package="keras_posenc")
class ALiBiBias(RelativeBiasLayer):
    """Attention with Linear Biases (ALiBi, Press et al., 2022).

    Adds to the attention scores a fixed, head-specific linear penalty on the
    distance between query and key: with `m_h = alibi_slopes(num_heads)[h]`,

    - `causal=True` (decoders, the paper's setting):
      `bias[h, i, j] = m_h * (key_pos[j] - query_pos[i])`, i.e. `-m_h * (i - j)`
      on the keys a causal mask keeps. Future keys (`j > i`) get positive
      values: **this layer adds the bias and does not mask**; combine it with
      a causal mask.
    - `causal=False` (encoders, a symmetric bidirectional variant):
      `bias[h, i, j] = -m_h * |key_pos[j] - query_pos[i]|`.

    The layer has no weights; the slopes are a numpy constant computed once.
    The bias depends only on `key_pos - query_pos`, so it extrapolates to any
    length, and positions are explicit so that cached decoding
    (`start_index`) and packed or left-padded sequences (`positions`) get
    the right offsets. The bias is computed in float32 and cast once to the
    compute dtype.

    For the keys a causal mask keeps, it gives the same attention as
    `keras_hub.layers.AlibiBias` (which adds `m_h * (j - (key_length - 1))`,
    a per-query constant away from this bias that softmax ignores).

    Args:
        num_heads: int. Number of attention heads.
        causal: bool. `True` for the paper's causal bias `m_h * (j - i)`,
            `False` for the symmetric `-m_h * |j - i|`. Defaults to `True`.
        num_alibi_heads: int or None. Bias only the first `num_alibi_heads`
            heads, with the slopes of that many heads, and leave the others
            unbiased (x-transformers' `alibi_num_heads`, after Press et al.'s
            suggestion that some heads need no recency bias). Defaults to
            None, every head.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: attention scores of shape
            `(batch_size, num_heads, query_length, key_length)`.
        start_index: int or scalar integer tensor. Position of the first
            query, e.g. the cache index while decoding. Defaults to `0`.
        positions: optional integer tensor of shape `(query_length,)` or
            `(batch_size, query_length)`, the query positions, overriding
            `start_index`.
        key_positions: optional integer tensor of shape `(key_length,)` or
            `(batch_size, key_length)`. Defaults to `positions` for
            self-attention (query and key lengths equal) when `positions` is
            given, else to `0, 1, ..., key_length - 1`.

    Returns:
        `inputs + bias`, of the shape of `inputs`, in the compute dtype.
        `compute_bias(query_positions, key_positions)` returns the bias alone,
        of shape `(1 or batch_size, num_heads, query_length, key_length)`.

    Input checks: scores that are not 4-D, whose head axis is not
    `num_heads`, or that are not floats raise when the layer is built or
    called. `positions` and `key_positions` must be integers whose shapes
    fit the scores; axes unknown while tracing (e.g. the query and key
    lengths of a TensorFlow graph traced with `None` lengths) cannot be
    checked, and a mismatch there fails inside the addition instead. A
    negative Python `start_index` raises; a tensor's value is not checked.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> scores = np.zeros((2, 4, 5, 5), dtype="float32")
    >>> layer = keras_posenc.layers.ALiBiBias(num_heads=4)
    >>> tuple(layer(scores).shape)
    (2, 4, 5, 5)
    >>> bias = layer.compute_bias(np.array([3]), np.arange(4))
    >>> tuple(bias.shape)
    (1, 4, 1, 4)
    >>> [float(x) for x in keras_posenc.layers.alibi_slopes(2)]
    [0.0625, 0.00390625]

    References:
        - [Press et al., 2022](https://arxiv.org/abs/2108.12409).
    """

    def __init__(self, num_heads, causal=True, num_alibi_heads=None, **kwargs):
        check_positive_int("num_heads", num_heads)
        check_bool("causal", causal)
        check_positive_int("num_alibi_heads", num_alibi_heads, allow_none=True)
        if num_alibi_heads is not None and num_alibi_heads > num_heads:
            raise ValueError(
                f"`num_alibi_heads` must be at most num_heads={num_heads}. "
                f"Received: num_alibi_heads={num_alibi_heads}"
            )
        super().__init__(num_heads=num_heads, **kwargs)
        self.causal = causal
        self.num_alibi_heads = num_alibi_heads
        # The first `num_alibi_heads` heads get the slopes of that many heads,
        # the others none (x-transformers' `alibi_num_heads`).
        slopes = alibi_slopes(num_alibi_heads or self.num_heads)
        slopes = np.pad(slopes, (0, self.num_heads - len(slopes)))
        # (heads, 1, 1), broadcast against (..., 1, query, key).
        self.slopes = slopes.reshape(-1, 1, 1)

    def relative_bias(self, relative_positions):
        # (..., 1, query, key)
        distance = ops.expand_dims(ops.cast(relative_positions, "float32"), -3)
        if not self.causal:
            distance = -ops.abs(distance)
        return ops.convert_to_tensor(self.slopes, dtype="float32") * distance

    def get_config(self):
        config = super().get_config()
        config["causal"] = self.causal
        config["num_alibi_heads"] = self.num_alibi_heads
        return config

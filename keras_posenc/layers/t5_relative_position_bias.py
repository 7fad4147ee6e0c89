import math

import keras
from keras import ops

from keras_posenc.layers.relative_bias_layer import RelativeBiasLayer
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_integer_tensor
from keras_posenc.utils.validation import check_positive_int


def _check_bucket_arguments(bidirectional, num_buckets, max_distance):
    check_bool("bidirectional", bidirectional)
    check_positive_int("num_buckets", num_buckets)
    check_positive_int("max_distance", max_distance)
    if bidirectional and (num_buckets % 2 or num_buckets < 4):
        raise ValueError(
            "With bidirectional=True, `num_buckets` must be an even integer >= 4 "
            "(half the buckets per direction, half of those exact). "
            f"Received: num_buckets={num_buckets}"
        )
    if not bidirectional and num_buckets < 2:
        raise ValueError(
            "With bidirectional=False, `num_buckets` must be at least 2 (half of "
            f"them exact). Received: num_buckets={num_buckets}"
        )
    max_exact = num_buckets // 4 if bidirectional else num_buckets // 2
    if max_distance <= max_exact:
        raise ValueError(
            f"`max_distance` must exceed the exact range of `num_buckets` "
            f"({max_exact} = num_buckets // {4 if bidirectional else 2}), or the "
            f"logarithmic buckets are empty. Received: max_distance={max_distance}, "
            f"num_buckets={num_buckets}, bidirectional={bidirectional}"
        )


def t5_relative_position_bucket(
    relative_position, bidirectional=True, num_buckets=32, max_distance=128
):
    """Maps relative positions to T5's relative attention buckets.

    A transcription of Mesh TensorFlow's `_relative_position_bucket` (used to
    train T5), with the same float32 logarithm and truncation. With
    `bidirectional=True`, half the buckets are for keys after the query.
    In each direction, distances below `max_exact = buckets // 2` get their
    own bucket, larger ones share logarithmically wider buckets up to
    `max_distance`, and everything further falls in the last bucket.

    Args:
        relative_position: integer tensor of any shape,
            `key_position - query_position`.
        bidirectional: bool. Whether keys after the query get their own
            buckets (encoders); `False` puts them all in bucket 0 (decoders).
            Defaults to `True`.
        num_buckets: int. Number of buckets. Defaults to `32`.
        max_distance: int. Distance from which all positions share the last
            bucket. Defaults to `128`.

    Returns:
        An int32 tensor of the shape of `relative_position`, in
        `[0, num_buckets)`.
    """
    _check_bucket_arguments(bidirectional, num_buckets, max_distance)
    relative_position = ops.convert_to_tensor(relative_position)
    # A float distance would be truncated silently by the int cast.
    check_integer_tensor("relative_position", relative_position)
    n = -ops.cast(relative_position, "int32")
    buckets = ops.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        buckets = ops.cast(ops.less(n, 0), "int32") * num_buckets
        n = ops.abs(n)
    else:
        n = ops.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = ops.less(n, max_exact)
    # The same float32 operations as the reference, on distances >= max_exact
    # only (log(0) never reaches the int cast). The values are >= 0, so the
    # floor is the reference's truncating int cast.
    large = ops.cast(ops.maximum(n, max_exact), "float32")
    scaled = (
        ops.log(large / ops.convert_to_tensor(float(max_exact), "float32"))
        / ops.convert_to_tensor(math.log(max_distance / max_exact), "float32")
        * ops.convert_to_tensor(float(num_buckets - max_exact), "float32")
    )
    # Clipped before the int cast, as a float, so huge distances cannot overflow.
    scaled = ops.minimum(ops.floor(scaled), float(num_buckets - 1 - max_exact))
    if_large = max_exact + ops.cast(scaled, "int32")
    return buckets + ops.where(is_small, n, if_large)


@keras.saving.register_keras_serializable(package="keras_posenc")
class T5RelativePositionBias(RelativeBiasLayer):
    """T5's learned relative position bias (Raffel et al., 2020).

    Each head learns one scalar per bucket of relative position:
    `bias[b, h, i, j] = table[bucket(key_pos[j] - query_pos[i]), h]`, with the
    buckets of `keras_posenc.layers.t5_relative_position_bucket` (exact for
    small distances, logarithmic up to `max_distance`, shared beyond). The
    bias is added to the attention scores; T5 computes it once in the first
    layer of a stack and shares it across layers.

    Query and key positions are explicit, so under a KV cache the new queries
    at `start_index + arange(query_length)` see the keys at their true
    distances. The bias is looked up in float32 and cast once to the compute
    dtype.

    Args:
        num_heads: int. Number of attention heads.
        num_buckets: int. Number of relative position buckets (even and
            `>= 4` when bidirectional). Defaults to `32`.
        max_distance: int. Distance from which relative positions share the
            last bucket; must exceed the exact range (`num_buckets // 4`
            bidirectional, `num_buckets // 2` otherwise). Defaults to `128`.
        bidirectional: bool. `True` for encoders (keys before and after the
            query have separate buckets), `False` for causal decoders.
            Defaults to `True`.
        embeddings_initializer: initializer of the `(num_buckets, num_heads)`
            table. Defaults to `"random_normal"` (mean 0, stddev 0.05): T5
            draws it from a normal distribution with stddev `d_model ** -0.5`,
            0.044 for `d_model = 512`.
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
    fit the scores; axes unknown while tracing cannot be checked. A
    negative Python `start_index` raises; a tensor's value is not checked.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> scores = np.zeros((2, 8, 5, 5), dtype="float32")
    >>> layer = keras_posenc.layers.T5RelativePositionBias(num_heads=8)
    >>> tuple(layer(scores).shape)
    (2, 8, 5, 5)
    >>> tuple(layer.embeddings.shape)
    (32, 8)
    >>> bias = layer.compute_bias(np.array([7]), np.arange(8))
    >>> tuple(bias.shape)
    (1, 8, 1, 8)
    >>> buckets = keras_posenc.layers.t5_relative_position_bucket(
    ...     np.array([-200, -20, -1, 0, 1, 20, 200]))
    >>> [int(x) for x in buckets]
    [15, 10, 1, 0, 17, 26, 31]

    References:
        - [Raffel et al., 2020](https://arxiv.org/abs/1910.10683), section 2.1.
    """

    def __init__(
        self,
        num_heads,
        num_buckets=32,
        max_distance=128,
        bidirectional=True,
        embeddings_initializer="random_normal",
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        _check_bucket_arguments(bidirectional, num_buckets, max_distance)
        super().__init__(num_heads=num_heads, **kwargs)
        self.num_buckets = int(num_buckets)
        self.max_distance = int(max_distance)
        self.bidirectional = bidirectional
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        if input_shape is not None:
            self._check_input_shape(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.num_heads),
            initializer=self.embeddings_initializer,
            trainable=True,
        )

    def relative_bias(self, relative_positions):
        buckets = t5_relative_position_bucket(
            relative_positions,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        table = ops.cast(self.embeddings, "float32")
        # (..., query, key, heads) -> (..., heads, query, key)
        return ops.moveaxis(ops.take(table, buckets, axis=0), -1, -3)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_buckets": self.num_buckets,
                "max_distance": self.max_distance,
                "bidirectional": self.bidirectional,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config

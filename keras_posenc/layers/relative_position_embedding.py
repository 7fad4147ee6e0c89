import keras
from keras import ops

from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.utils.attention import bucket_one_hot
from keras_posenc.utils.attention import bucket_sums
from keras_posenc.utils.attention import shaw_attention
from keras_posenc.utils.attention import shaw_attention_is_faster
from keras_posenc.utils.positions import check_key_positions_shape
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import default_key_positions
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_posenc")
class RelativePositionEmbedding(AttentionPosition):
    """Relative position representations of Shaw et al. (2018) for attention.

    Each query/key pair `(i, j)` gets a bucket
    `r_ij = clip(key_pos[j] - query_pos[i], -k, k) + k` in `[0, 2k]`, with
    `k = max_distance`, and two learned tables of shape `(2k + 1, head_dim)`
    shared by all heads: `key_embeddings` (`E_K`) and `value_embeddings`
    (`E_V`). Attention adds `q_i . E_K[r_ij]` to the logit `q_i . k_j` before
    the `1 / sqrt(head_dim)` scaling (eq. 4 and 5 of the paper) and
    `sum_j a_ij E_V[r_ij]` to the output `sum_j a_ij v_j` (eq. 3). Distances
    beyond `k` share the end rows of the tables.

    Neither term builds the `(q_len, k_len, head_dim)` tensors `a^K`, `a^V` of
    the paper. `compute_logits` multiplies the queries by the whole table,
    `(batch, heads, q_len, 2k + 1)`, and gathers bucket `r_ij` for each key, the
    gather form of the "skewing" of Huang et al. (2018) that also works for
    arbitrary positions. `compute_values` sums the attention weights of each
    bucket, `(batch, heads, q_len, 2k + 1)`, and multiplies the sums by `E_V`.
    Extra memory stays of the order of the attention weights themselves
    (`benchmarks/shaw_memory.py` measures it against plain attention). For
    small `batch * heads` the bucket sums use a scatter-add, whose summation
    order on GPUs is not deterministic.

    The layer's own call returns the logit term, so it can be used (and
    tested) as a layer; an attention layer calls `compute_logits` and
    `compute_values` with the position ids it already has.

    Args:
        max_distance: int. The clipping distance `k`; relative distances
            beyond `k` in either direction share one row. Defaults to `16`.
        use_values: bool. Whether to create `value_embeddings` for the output
            term (`a^V` of the paper). Defaults to `True`.
        embeddings_initializer: initializer of both tables. Defaults to
            `"glorot_uniform"`.
        **kwargs: other keyword arguments of `keras.layers.Layer`
            (`name`, `dtype`, ...).

    Call arguments:
        query: float tensor of shape `(batch_size, q_len, num_heads, head_dim)`.
        key: tensor of shape `(batch_size, k_len, num_heads, head_dim)`; only its
            length is used.
        start_index: int or scalar integer tensor. Position of the first query,
            e.g. the cache index while decoding. Defaults to `0`.
        positions: optional integer tensor of shape `(q_len,)` or
            `(batch_size, q_len)` of query positions, overriding `start_index`.
            When `key_positions` is None and `q_len == k_len`, the keys use it
            too.
        key_positions: optional integer tensor of shape `(k_len,)` or
            `(batch_size, k_len)`. Defaults to `arange(k_len)` (cache slots), or
            to `positions` as above.

    Returns:
        The logit term `q_i . E_K[r_ij]` (unscaled), of shape
        `(batch_size, num_heads, q_len, k_len)` in the compute dtype.

    Input checks: `query` and `key` must be 4-D floats with the same batch
    size, and `query` must keep the `head_dim` the layer was built with.
    `positions` and `key_positions` must be integers whose shapes fit
    `query` and `key`; axes unknown while tracing cannot be checked. A
    negative Python `start_index` raises; a tensor's value is not checked.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_posenc
    >>> query = np.random.normal(size=(2, 10, 4, 16)).astype("float32")
    >>> key = np.random.normal(size=(2, 10, 4, 16)).astype("float32")
    >>> layer = keras_posenc.layers.RelativePositionEmbedding(max_distance=4)
    >>> tuple(layer(query, key).shape)
    (2, 4, 10, 10)
    >>> positions = np.arange(10)
    >>> logits = layer.compute_logits(query, positions, positions)
    >>> weights = keras.ops.softmax(logits, axis=-1)
    >>> tuple(layer.compute_values(weights, positions, positions).shape)
    (2, 10, 4, 16)

    References:
        - [Shaw et al., 2018](https://arxiv.org/abs/1803.02155).
        - [Huang et al., 2018](https://arxiv.org/abs/1809.04281) (Music
          Transformer, memory-efficient relative attention).
    """

    def __init__(
        self,
        max_distance=16,
        use_values=True,
        embeddings_initializer="glorot_uniform",
        **kwargs,
    ):
        check_positive_int("max_distance", max_distance)
        check_bool("use_values", use_values)
        super().__init__(**kwargs)
        self.max_distance = int(max_distance)
        self.use_values = use_values
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.num_buckets = 2 * self.max_distance + 1

    @property
    def needs_attention_weights(self):
        return self.use_values

    def build(self, query_shape):
        if len(query_shape) != 4 or query_shape[-1] is None:
            raise ValueError(
                "`query` must have shape (batch_size, q_len, num_heads, head_dim) "
                f"with a known head_dim. Received: query.shape={tuple(query_shape)}"
            )
        head_dim = query_shape[-1]
        self.key_embeddings = self.add_weight(
            name="key_embeddings",
            shape=(self.num_buckets, head_dim),
            initializer=self.embeddings_initializer,
            trainable=True,
        )
        if self.use_values:
            self.value_embeddings = self.add_weight(
                name="value_embeddings",
                shape=(self.num_buckets, head_dim),
                initializer=self.embeddings_initializer,
                trainable=True,
            )

    def relative_position_index(self, query_positions, key_positions):
        """Bucket `clip(key_pos[j] - query_pos[i], -k, k) + k` of each pair.

        Args:
            query_positions: integer tensor `(q_len,)` or `(batch_size, q_len)`.
            key_positions: integer tensor `(k_len,)` or `(batch_size, k_len)`.

        Returns:
            An int32 tensor in `[0, 2k]`, `(q_len, k_len)` when both positions are
            1D, else `(batch_size, q_len, k_len)`.
        """
        query_positions = ops.cast(query_positions, "int32")
        key_positions = ops.cast(key_positions, "int32")
        distance = ops.expand_dims(key_positions, -2) - ops.expand_dims(
            query_positions, -1
        )
        clipped = ops.clip(distance, -self.max_distance, self.max_distance)
        return clipped + self.max_distance

    def _head_broadcast_index(self, query_positions, key_positions):
        # (1 or batch, 1, query, key): broadcasts against (batch, heads, ...)
        # without ever tiling the index over batch and heads.
        index = self.relative_position_index(query_positions, key_positions)
        if len(index.shape) == 2:
            return index[None, None]
        return ops.expand_dims(index, 1)

    def compute_logits(self, query, query_positions, key_positions, key=None):
        """The logit term `q_i . E_K[r_ij]`, before any `1 / sqrt(d)` scaling.

        Args:
            query: tensor `(batch_size, q_len, num_heads, head_dim)`.
            query_positions: integer tensor `(q_len,)` or `(batch_size, q_len)`.
            key_positions: integer tensor `(k_len,)` or `(batch_size, k_len)`.
            key: unused (the term depends on the queries only).

        Returns:
            A tensor `(batch_size, num_heads, q_len, k_len)` in the compute dtype.
        """
        query = ops.cast(query, self.compute_dtype)
        table = ops.cast(self.key_embeddings, self.compute_dtype)
        # Every query against every bucket: (batch, heads, query, 2k + 1).
        bucket_logits = ops.einsum("bqhd,rd->bhqr", query, table)
        index = self._head_broadcast_index(query_positions, key_positions)
        # (batch, heads, query, key); take_along_axis broadcasts the index.
        return ops.take_along_axis(bucket_logits, index, axis=-1)

    def compute_values(self, attention_weights, query_positions, key_positions):
        """The output term `sum_j a_ij E_V[r_ij]`.

        Args:
            attention_weights: tensor `(batch_size, num_heads, q_len, k_len)`,
                the softmax output (after dropout, if any).
            query_positions: integer tensor `(q_len,)` or `(batch_size, q_len)`.
            key_positions: integer tensor `(k_len,)` or `(batch_size, k_len)`.

        Returns:
            A tensor `(batch_size, q_len, num_heads, head_dim)` in the compute
            dtype, to add to `sum_j a_ij v_j`.
        """
        if not self.use_values:
            raise ValueError(
                "`compute_values` needs the value table. Create the layer with "
                f"`use_values=True`. Received: use_values={self.use_values}"
            )
        weights = ops.cast(attention_weights, self.compute_dtype)
        index = self._shared_index(query_positions, key_positions)
        bucket_weights = self._bucket_weights(weights, index)
        table = ops.cast(self.value_embeddings, self.compute_dtype)
        return ops.einsum("bhqr,rd->bqhd", bucket_weights, table)

    def _shared_index(self, query_positions, key_positions):
        """`relative_position_index`, `(T, S)` when one example holds it all."""
        index = self.relative_position_index(query_positions, key_positions)
        if (
            len(index.shape) == 3
            and isinstance(index.shape[0], int)
            and (index.shape[0] == 1)
        ):
            index = index[0]
        return index

    def _one_hot_fits(self, batch_size, num_heads, index):
        """Whether the one-hot of `index` is no larger than the weights."""
        index_batch = 1 if len(index.shape) == 2 else index.shape[0]
        # Unknown sizes are None (TensorFlow) or symbolic (JAX shape tracing).
        return (
            all(isinstance(n, int) for n in (batch_size, num_heads, index_batch))
            and index_batch * self.num_buckets <= batch_size * num_heads
        )

    def compute_attention(
        self, query, key, value, query_positions, key_positions, scale, mask=None
    ):
        """The whole attention by `shaw_attention`, or None where not faster.

        Taken on the backends where its written-out gradient was measured
        faster than autodiff through `compute_logits` / `compute_values`
        (see `keras_posenc/utils/attention.py`), in float32, with both tables
        and a one-hot of the buckets no larger than the attention weights.
        """
        tensors = (query, key, value)
        if not (
            self.use_values
            and shaw_attention_is_faster()
            and all(
                keras.backend.standardize_dtype(tensor.dtype) == "float32"
                for tensor in tensors
            )
            and self.compute_dtype == "float32"
            and value.shape[-1] == query.shape[-1]
        ):
            return None
        index = self._shared_index(query_positions, key_positions)
        if not self._one_hot_fits(query.shape[0], query.shape[2], index):
            return None
        return shaw_attention(
            query,
            key,
            value,
            # Tensors, not variables: PyTorch's custom gradient saves them.
            ops.convert_to_tensor(self.key_embeddings),
            ops.convert_to_tensor(self.value_embeddings),
            index,
            scale,
            mask=mask,
        )

    def _bucket_weights(self, weights, index):
        """Sums the weights of each bucket: (batch, heads, query, 2k + 1).

        `index` is `(query, key)`, or `(batch, query, key)` per example. Two
        routes, picked from the static shapes, neither building a
        `(..., query, key, head_dim)` tensor:
        - one-hot matmul, `einsum("bhqk,qkr->bhqr", weights, one_hot(r))`: the
          `(query, key, 2k + 1)` one-hot (per example if `index` is) is shared
          by the batch and heads, so once `batch * heads >= 2k + 1` (the usual
          training shapes) it is no larger than the weights, and a matmul is
          the fastest op;
        - otherwise a scatter-add (`segment_sum`) of each `(batch, heads)`
          vector of weights into its `(query, bucket)` row: the temporaries
          are one transposed copy of the weights and one int32 id per
          `(query, key)` pair. (A Python loop of masked sums, one per bucket,
          looks cheaper, but XLA merges it into one
          `(batch, heads, query, 2k + 1, key)` tensor.)
        """
        if self._one_hot_fits(weights.shape[0], weights.shape[1], index):
            return bucket_sums(
                weights, bucket_one_hot(index, self.num_buckets, weights.dtype)
            )

        batch_size, num_heads, query_length, key_length = ops.shape(weights)
        if len(index.shape) == 2:
            # Rows (query, key) of (batch * heads) weights.
            data = ops.reshape(
                ops.transpose(weights, (2, 3, 0, 1)),
                (query_length * key_length, batch_size * num_heads),
            )
            num_rows = query_length
        else:
            # Rows (batch, query, key) of (heads) weights.
            data = ops.reshape(
                ops.transpose(weights, (0, 2, 3, 1)),
                (batch_size * query_length * key_length, num_heads),
            )
            num_rows = batch_size * query_length
        # (rows, key): bucket slot `row * (2k + 1) + r`.
        slots = ops.reshape(
            ops.arange(num_rows, dtype="int32") * self.num_buckets, (-1, 1)
        ) + ops.reshape(index, (num_rows, key_length))
        sums = ops.segment_sum(
            data, ops.reshape(slots, (-1,)), num_segments=num_rows * self.num_buckets
        )
        if len(index.shape) == 2:
            sums = ops.reshape(
                sums, (query_length, self.num_buckets, batch_size, num_heads)
            )
            sums = ops.transpose(sums, (2, 3, 0, 1))
        else:
            sums = ops.reshape(
                sums, (batch_size, query_length, self.num_buckets, num_heads)
            )
            sums = ops.transpose(sums, (0, 3, 1, 2))
        # PyTorch's segment_sum returns float32 whatever the input.
        return ops.cast(sums, weights.dtype)

    def call(self, query, key, start_index=0, positions=None, key_positions=None):
        check_float_tensor("RelativePositionEmbedding", "query", query)
        check_float_tensor("RelativePositionEmbedding", "key", key)
        head_dim = self.key_embeddings.shape[-1]
        if len(query.shape) != 4 or query.shape[-1] != head_dim:
            raise ValueError(
                "`query` must have shape (batch_size, q_len, num_heads, head_dim) "
                f"with the head_dim={head_dim} the layer was built with. "
                f"Received: query.shape={tuple(query.shape)}"
            )
        batch_size = query.shape[0]
        if len(key.shape) != 4 or (
            None not in (key.shape[0], batch_size) and key.shape[0] != batch_size
        ):
            raise ValueError(
                "`key` must have shape (batch_size, k_len, num_heads, head_dim) "
                f"with the batch size of `query`. Received: "
                f"key.shape={tuple(key.shape)}, query.shape={tuple(query.shape)}"
            )
        query_length = query.shape[1]
        key_length = key.shape[1]
        if positions is not None:
            check_positions_shape(positions, query_length, query.shape[0])
        if key_positions is not None:
            check_key_positions_shape(key_positions, key_length, key.shape[0])
        key_positions = default_key_positions(
            positions, key_positions, query_length, key_length
        )
        query_positions = position_ids(
            ops.shape(query)[1], start_index, positions, dtype="int32"
        )
        if key_positions is None:
            key_positions = ops.arange(ops.shape(key)[1], dtype="int32")
        return self.compute_logits(query, query_positions, key_positions)

    def compute_output_shape(self, query_shape, key_shape):
        return (query_shape[0], query_shape[2], query_shape[1], key_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_distance": self.max_distance,
                "use_values": self.use_values,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config

import math

import keras
from keras import ops

from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.utils.positions import check_key_positions_shape
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import default_key_positions
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_posenc")
class ContextualPositionBias(AttentionPosition):
    """CoPE: positions that count gated tokens (Golovneva et al., 2024).

    Contextual Position Encoding gives each query/key pair a fractional
    position measured in gated tokens rather than in tokens. With the gates
    `g_it = sigmoid(q_i . k_t / sqrt(d))`, the position of key `j` seen from
    query `i` is `p_ij = sum_{t = j .. i} g_it`, clamped to
    `num_positions - 1`, and the logit gets `q_i . e[p_ij]`, with `e[p]`
    interpolated linearly between the learned embeddings of `floor(p)` and
    `ceil(p)`. As in the paper's reference code (its `CoPE` module): the
    gates see the scaled logits `q . k / sqrt(d)`; the term `q_i . e[p_ij]`
    joins the scaled logits unscaled (the attention layer scales this hook's
    term by `1 / sqrt(key_dim)`, so `compute_logits` returns it times
    `sqrt(key_dim)`); one `(key_dim, num_positions)` table, the reference's
    `pos_emb`, serves all heads; it starts at zeros, so the layer starts as
    NoPE. The math runs in float32 whatever the compute dtype.

    The attention layer does not pass its mask to the position hooks, so the
    gating comes from the positions: key slot `t` counts for query `i` when
    `key_positions[t] <= query_positions[i]`, and `p_ij` sums those gates over
    the key slots from `j` onwards (a reverse cumulative sum over the key
    axis) up to the end of key `j`'s sequence, where a key position that is
    not above the one before it starts a new sequence. On causal
    self-attention this is the paper's formula, also under a key/value cache
    (the unfilled slots sit at positions after the query), with left padding
    given per-example positions (e.g. `[0, 0, 0, 1, 2]`: each pad is a
    sequence of its own, before the real tokens), and with packed sequences
    (e.g. `[0, 1, 2, 0, 1]`, with an attention mask that keeps each sequence
    to itself). Positions must therefore rise within a sequence (as those of
    `RandomizedPositions` do); repeated positions split it.

    For keys after the query (non-causal attention; our extension, which
    causal attention never uses), `p_ij = sum_{t = i .. j} g_it`, summed over
    the slots `t <= j` of key `j`'s sequence with `key_positions[t] >=
    query_positions[i]`: `p_ij` counts the gated tokens between the query and
    the key in either direction.

    The gates need the keys, so the layer computes `q . k` a second time
    beside the attention's own, and holds a few float32 tensors of the size
    of the attention logits. It needs no attention weights, so the attention
    keeps its fused path.

    Args:
        num_positions: int. Number of integer positions with an embedding
            (`npos_max` of the paper); larger counts share the last one.
            Defaults to `64`.
        embeddings_initializer: initializer of the `(key_dim, num_positions)`
            table. Defaults to `"zeros"`, as in the reference code.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        query: float tensor `(batch_size, T, num_heads, key_dim)` of projected
            queries.
        key: float tensor `(batch_size, S, num_heads, key_dim)` of projected
            keys.
        start_index: int or scalar integer tensor. Position of the first
            query. Defaults to `0`.
        positions: optional integer tensor `(T,)` or `(batch_size, T)` of
            query positions, overriding `start_index`; the keys take it too
            when `key_positions` is None and `T == S`.
        key_positions: optional integer tensor `(S,)` or `(batch_size, S)`.
            Defaults to `arange(S)`, or to `positions` as above.

    Returns:
        The logit term `sqrt(key_dim) * q_i . e[p_ij]` of shape
        `(batch_size, num_heads, T, S)` in the compute dtype, as
        `compute_logits` gives it to the attention layer (which adds it to
        `q . k` and scales both by `1 / sqrt(key_dim)`).

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> from keras_posenc.layers import ContextualPositionBias
    >>> attention = keras_posenc.layers.PositionalMultiHeadAttention(
    ...     num_heads=2, key_dim=8, position=ContextualPositionBias(num_positions=16))
    >>> x = np.random.rand(2, 6, 16).astype("float32")
    >>> tuple(attention(x, x, use_causal_mask=True).shape)
    (2, 6, 16)
    >>> query = np.random.rand(2, 6, 2, 8).astype("float32")
    >>> tuple(ContextualPositionBias()(query, query).shape)
    (2, 2, 6, 6)

    References:
        - [Golovneva et al., 2024](https://arxiv.org/abs/2405.18719)
    """

    def __init__(self, num_positions=64, embeddings_initializer="zeros", **kwargs):
        check_positive_int("num_positions", num_positions)
        super().__init__(**kwargs)
        self.num_positions = int(num_positions)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, query_shape):
        if len(query_shape) != 4 or query_shape[-1] is None:
            raise ValueError(
                "`query` must have shape (batch_size, T, num_heads, key_dim) "
                f"with a known key_dim. Received: query.shape={tuple(query_shape)}"
            )
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(query_shape[-1], self.num_positions),
            initializer=self.embeddings_initializer,
        )

    def compute_logits(self, query, query_positions, key_positions, key=None):
        """The logit term `sqrt(key_dim) * q_i . e[p_ij]`.

        Args:
            query: tensor `(batch_size, T, num_heads, key_dim)`.
            query_positions: integer tensor `(T,)` or `(batch_size, T)`.
            key_positions: integer tensor `(S,)` or `(batch_size, S)`.
            key: tensor `(batch_size, S, num_heads, key_dim)`; required (the
                gates are computed from it).

        Returns:
            A tensor `(batch_size, num_heads, T, S)` in the compute dtype.
        """
        if key is None:
            raise ValueError(
                "ContextualPositionBias gates the positions with the keys: "
                "`compute_logits` needs `key`. Received: key=None"
            )
        if not self.built:
            self.build(tuple(query.shape))
        key_dim = query.shape[-1]
        query = ops.cast(query, "float32")
        key = ops.cast(key, "float32")
        scores = ops.einsum("bthd,bshd->bhts", query, key) / math.sqrt(key_dim)
        gates = ops.sigmoid(scores)  # (batch, heads, T, S)

        query_positions = ops.cast(query_positions, "int32")
        key_positions = ops.cast(key_positions, "int32")
        # (batch or 1, 1, T, 1) against (batch or 1, 1, 1, S).
        query_column = _batched(query_positions)[:, None, :, None]
        key_row = _batched(key_positions)[:, None, None, :]
        is_before = key_row <= query_column
        sequence_start, next_sequence = _sequence_bounds(key_positions)

        # Keys at or before the query: the gates of slots j .. end of j's
        # sequence that are not after the query.
        before = ops.where(is_before, gates, 0.0)
        suffix = ops.flip(ops.cumsum(ops.flip(before, axis=-1), axis=-1), axis=-1)
        suffix = ops.pad(suffix, [[0, 0], [0, 0], [0, 0], [0, 1]])
        counted_before = suffix[..., :-1] - ops.take_along_axis(
            suffix, next_sequence, axis=-1
        )
        # Keys after the query: the gates of slots start of j's sequence .. j
        # that are not before the query.
        after = ops.where(key_row >= query_column, gates, 0.0)
        prefix = ops.pad(ops.cumsum(after, axis=-1), [[0, 0], [0, 0], [0, 0], [1, 0]])
        counted_after = prefix[..., 1:] - ops.take_along_axis(
            prefix, sequence_start, axis=-1
        )
        counts = ops.where(is_before, counted_before, counted_after)
        # Cumulative sums round: keep the counts in the table's range.
        counts = ops.clip(counts, 0.0, self.num_positions - 1.0)

        # Interpolate between the logits of the integer positions.
        table = ops.cast(self.position_embeddings, "float32")
        position_logits = ops.einsum("bthd,dn->bhtn", query, table)
        floor = ops.stop_gradient(ops.floor(counts))
        ceil = ops.stop_gradient(ops.ceil(counts))
        weight = counts - floor
        logits_floor = ops.take_along_axis(
            position_logits, ops.cast(floor, "int32"), axis=-1
        )
        logits_ceil = ops.take_along_axis(
            position_logits, ops.cast(ceil, "int32"), axis=-1
        )
        logits = logits_ceil * weight + logits_floor * (1.0 - weight)
        return ops.cast(logits * math.sqrt(key_dim), self.compute_dtype)

    def call(self, query, key, start_index=0, positions=None, key_positions=None):
        name = self.__class__.__name__
        check_float_tensor(name, "query", query)
        check_float_tensor(name, "key", key)
        key_dim = self.position_embeddings.shape[0]
        if len(query.shape) != 4 or query.shape[-1] != key_dim:
            raise ValueError(
                "`query` must have shape (batch_size, T, num_heads, key_dim) with "
                f"the key_dim={key_dim} the layer was built with. "
                f"Received: query.shape={tuple(query.shape)}"
            )
        if len(key.shape) != 4 or any(
            None not in (dim, want) and dim != want
            for dim, want in zip(
                (key.shape[0], key.shape[2], key.shape[3]),
                (query.shape[0], query.shape[2], key_dim),
            )
        ):
            raise ValueError(
                "`key` must have shape (batch_size, S, num_heads, key_dim) with "
                "the batch size, heads and key_dim of `query`. Received: "
                f"key.shape={tuple(key.shape)}, query.shape={tuple(query.shape)}"
            )
        query_length, key_length = query.shape[1], key.shape[1]
        if positions is not None:
            check_positions_shape(positions, query_length, query.shape[0])
        if key_positions is not None:
            check_key_positions_shape(key_positions, key_length, key.shape[0])
        key_positions = default_key_positions(
            positions, key_positions, query_length, key_length
        )
        query_positions = position_ids(ops.shape(query)[1], start_index, positions)
        key_positions = position_ids(ops.shape(key)[1], 0, key_positions)
        return self.compute_logits(query, query_positions, key_positions, key=key)

    def compute_output_shape(self, query_shape, key_shape):
        return (query_shape[0], query_shape[2], query_shape[1], key_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_positions": self.num_positions,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config


def _batched(positions):
    """`(L,)` or `(batch, L)` positions as `(1 or batch, L)`."""
    return positions[None] if len(positions.shape) == 1 else positions


def _sequence_bounds(key_positions):
    """The first slot of each key's sequence and of the sequence after it.

    A key position not above the one before it starts a new sequence.

    Args:
        key_positions: int32 `(S,)` or `(batch, S)`.

    Returns:
        Two int32 tensors `(batch or 1, 1, 1, S)`: the slot where key `j`'s
        sequence starts, and the slot where the next one starts (`S` for the
        last), as indices into tensors padded by one slot.
    """
    key_positions = _batched(key_positions)  # (batch or 1, S)
    length = ops.shape(key_positions)[-1]
    starts = ops.cast(key_positions[:, 1:] <= key_positions[:, :-1], "int32")
    starts = ops.pad(starts, [[0, 0], [1, 0]])  # (batch or 1, S), 1 where one starts
    sequence_index = ops.cumsum(starts, axis=-1)
    # Start slots in order, then `length` for the slots that start nothing:
    # entry n is where sequence n + 1 starts.
    slots = ops.arange(length, dtype="int32")
    next_starts = ops.sort(ops.where(starts > 0, slots, length), axis=-1)
    next_sequence = ops.take_along_axis(next_starts, sequence_index, axis=-1)
    all_starts = ops.pad(next_starts[:, :-1], [[0, 0], [1, 0]])
    sequence_start = ops.take_along_axis(all_starts, sequence_index, axis=-1)
    return sequence_start[:, None, None], next_sequence[:, None, None]

import math

import keras
from keras import ops

from keras_posenc.utils.masks import causal_mask
from keras_posenc.utils.masks import check_attention_mask
from keras_posenc.utils.masks import check_padding_mask
from keras_posenc.utils.masks import clear_keras_masks
from keras_posenc.utils.masks import merge_attention_masks
from keras_posenc.utils.positions import check_key_positions_shape
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import check_start_index
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import check_rate

ATTENTION_POSITIONS = ("rotary", "xpos", "alibi", "t5", "shaw", "none", None)


def make_attention_position(position, num_heads, dtype=None):
    """The position layer for a scheme name, or None for `"none"`/`None`.

    Defaults: ALiBi in its symmetric form (on the keys a causal mask keeps it
    equals the causal form, so it serves encoders and decoders), T5 with
    bidirectional buckets, Shaw with `max_distance=16`. Pass a layer instance
    to `PositionalMultiHeadAttention(position=...)` for other settings.
    """
    from keras_posenc.layers.alibi_bias import ALiBiBias
    from keras_posenc.layers.relative_position_embedding import (
        RelativePositionEmbedding,
    )
    from keras_posenc.layers.rotary_embedding import RotaryEmbedding
    from keras_posenc.layers.t5_relative_position_bias import T5RelativePositionBias
    from keras_posenc.layers.xpos import XPos

    name = "position"
    if position == "rotary":
        return RotaryEmbedding(dtype=dtype, name=name)
    if position == "xpos":
        return XPos(dtype=dtype, name=name)
    if position == "alibi":
        return ALiBiBias(num_heads=num_heads, causal=False, dtype=dtype, name=name)
    if position == "t5":
        return T5RelativePositionBias(num_heads=num_heads, dtype=dtype, name=name)
    if position == "shaw":
        return RelativePositionEmbedding(max_distance=16, dtype=dtype, name=name)
    return None


def position_kind(layer):
    """How a position layer enters attention: rotate, bias, shaw or None."""
    from keras_posenc.layers.alibi_bias import ALiBiBias
    from keras_posenc.layers.relative_position_embedding import (
        RelativePositionEmbedding,
    )
    from keras_posenc.layers.rotary_embedding import RotaryEmbedding
    from keras_posenc.layers.t5_relative_position_bias import T5RelativePositionBias
    from keras_posenc.layers.xpos import XPos

    if layer is None:
        return None
    if isinstance(layer, XPos):
        return "xpos"
    if isinstance(layer, RotaryEmbedding):
        return "rotary"
    if isinstance(layer, (ALiBiBias, T5RelativePositionBias)):
        return "bias"
    if isinstance(layer, RelativePositionEmbedding):
        return "shaw"
    raise ValueError(
        "`position` must be one of "
        f"{[p for p in ATTENTION_POSITIONS if p]}, None, or an instance of "
        "RotaryEmbedding, XPos, ALiBiBias, T5RelativePositionBias or "
        f"RelativePositionEmbedding. Received: position={layer!r}"
    )


@keras.saving.register_keras_serializable(package="keras_posenc")
class PositionalMultiHeadAttention(keras.layers.Layer):
    """Multi-head attention that takes any relative position scheme.

    Keras' `MultiHeadAttention` has no way to add a position bias or rotate
    queries and keys. This layer does, for every scheme of the library:

    - `"rotary"` / `"xpos"`: queries and keys are rotated (and, for xPos,
      scaled) at their positions before the dot product;
    - `"alibi"` / `"t5"`: a `(heads, query, key)` bias is added to the logits;
    - `"shaw"`: learned embeddings of the clipped distance enter the logits and
      the values (Shaw et al. 2018);
    - `None` / `"none"`: no position information (NoPE).

    Attention runs through `keras.ops.dot_product_attention` (the backend's
    fused kernel where it has one, bias passed in) except where that op cannot
    express the computation: the Shaw scheme, dropout during training, and
    `return_attention_scores=True` take an explicit einsum path.

    With a key/value `cache` (keras-hub's layout `(batch, 2, max_length,
    num_heads, key_dim)`), new keys and values are written at
    `cache_update_index` and the queries get positions
    `cache_update_index + arange(query_length)`, so step-by-step decoding
    equals full decoding for every scheme.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for queries and keys; must be even for
            rotary and xPos.
        value_dim: int or None. Size of each head for values; defaults to
            `key_dim`.
        position: a scheme name (`"rotary"`, `"xpos"`, `"alibi"`, `"t5"`,
            `"shaw"`, `"none"`) or None, or a position layer instance
            (`RotaryEmbedding`, `XPos`, `ALiBiBias`, `T5RelativePositionBias`,
            `RelativePositionEmbedding`) for non-default settings. Defaults to
            None.
        dropout: float in [0, 1). Dropout on the attention probabilities.
        use_bias: bool. Whether the projections have biases.
        output_dim: int or None. Width of the output; defaults to the width of
            the query.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        query: `(batch, T, dim)` queries.
        value: `(batch, S, dim)` values.
        key: optional `(batch, S, dim)` keys; defaults to `value`.
        query_mask, value_mask, key_mask: optional `(batch, T)` / `(batch, S)`
            padding masks; filled from Keras masks automatically.
        attention_mask: optional bool `(batch, T, S)`, True where attention is
            allowed.
        use_causal_mask: bool. Whether query slot `t` may only see key slots
            `<= t` (offset by `cache_update_index` under a cache).
        positions: optional int `(T,)` or `(batch, T)` positions of the queries
            (e.g. left-padded prompts); defaults to
            `cache_update_index + arange(T)`.
        key_positions: optional int `(S,)` or `(batch, S)` positions of the
            keys; defaults to `positions` in self-attention without a cache,
            else `arange(S)`.
        cache: optional `(batch, 2, max_length, num_heads, key_dim)` tensor.
        cache_update_index: int or scalar int tensor; where the new keys and
            values go in `cache`. None with a cache means a precomputed
            cross-attention cache that is read, not updated.
        return_attention_scores: bool. Also return the `(batch, heads, T, S)`
            attention probabilities.
        training: bool. Enables dropout.

    Returns:
        The `(batch, T, output_dim)` output; then the scores if
        `return_attention_scores`; then the updated cache if `cache` was given.

    Input checks, on every call (also on `keras.Input`s): `query`, `value`
    and `key` must be 3-D floats with one batch size, `key` and `value` of
    one length; `query_mask` must be `(batch, T)`, `value_mask`/`key_mask`
    `(batch, S)`, `attention_mask` must broadcast to `(batch, T, S)`;
    `positions`/`key_positions` must be integers of shape `(T,)`/`(S,)` or
    with a batch axis; `cache` must be `(batch, 2, max_length, num_heads,
    key_dim)`; a Python `cache_update_index` must be a non-negative int and
    a tensor one an integer scalar. Axes unknown while tracing (`None`) and
    the values inside tensors cannot be checked: a mismatch there fails
    inside the attention op instead.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> x = np.random.rand(2, 6, 16).astype("float32")
    >>> attention = keras_posenc.layers.PositionalMultiHeadAttention(
    ...     num_heads=2, key_dim=8, position="alibi")
    >>> tuple(attention(x, x, use_causal_mask=True).shape)
    (2, 6, 16)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Shaw et al., 2018](https://arxiv.org/abs/1803.02155),
          [Raffel et al., 2020](https://arxiv.org/abs/1910.10683),
          [Press et al., 2022](https://arxiv.org/abs/2108.12409),
          [Su et al., 2021](https://arxiv.org/abs/2104.09864),
          [Sun et al., 2022](https://arxiv.org/abs/2212.10554)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        position=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim)
        check_positive_int("value_dim", value_dim, allow_none=True)
        check_positive_int("output_dim", output_dim, allow_none=True)
        check_rate("dropout", dropout)
        if isinstance(position, dict):
            position = keras.saving.deserialize_keras_object(position)
        if not isinstance(position, keras.layers.Layer):
            if not isinstance(position, (str, type(None))) or (
                position not in ATTENTION_POSITIONS
            ):
                raise ValueError(
                    "`position` must be one of "
                    f"{[p for p in ATTENTION_POSITIONS if p]} or None, or a "
                    f"position layer instance. Received: position={position!r}"
                )
        if position in ("rotary", "xpos") and key_dim % 2:
            raise ValueError(
                f"`key_dim` must be even for position={position!r}. "
                f"Received: key_dim={key_dim}"
            )
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim or key_dim)
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

        if isinstance(position, keras.layers.Layer):
            self.position_layer = position
            self.position = None
        else:
            self.position = None if position == "none" else position
            self.position_layer = make_attention_position(
                self.position, self.num_heads, dtype=self.dtype_policy
            )
        self.position_kind = position_kind(self.position_layer)
        self.dropout_layer = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="attention_dropout"
        )

    def _dense(self, equation, output_shape, bias_axes, name):
        return keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=self.kernel_initializer.__class__.from_config(
                self.kernel_initializer.get_config()
            ),
            bias_initializer=self.bias_initializer.__class__.from_config(
                self.bias_initializer.get_config()
            ),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = value_shape or query_shape
        key_shape = key_shape or value_shape
        for name, shape in (
            ("query", query_shape),
            ("value", value_shape),
            ("key", key_shape),
        ):
            if len(shape) != 3 or shape[-1] is None:
                raise ValueError(
                    f"`{name}` must have shape (batch_size, length, dim) with a "
                    f"known dim. Received: {name}.shape={tuple(shape)}"
                )
        heads = (None, self.num_heads, self.key_dim)
        self.query_dense = self._dense("abc,cde->abde", heads, "de", "query")
        self.query_dense.build(query_shape)
        self.key_dense = self._dense("abc,cde->abde", heads, "de", "key")
        self.key_dense.build(key_shape)
        self.value_dense = self._dense(
            "abc,cde->abde", (None, self.num_heads, self.value_dim), "de", "value"
        )
        self.value_dense.build(value_shape)
        output_dim = self.output_dim or query_shape[-1]
        self.output_dense = self._dense(
            "abcd,cde->abe", (None, output_dim), "e", "attention_output"
        )
        self.output_dense.build(
            (query_shape[0], query_shape[1], self.num_heads, self.value_dim)
        )
        head_shape = (query_shape[0], query_shape[1], self.num_heads, self.key_dim)
        if self.position_layer is not None and not self.position_layer.built:
            if self.position_kind == "bias":
                self.position_layer.build((None, self.num_heads, None, None))
            else:
                self.position_layer.build(head_shape)

    def _rotate(self, tensor, tensor_positions, is_key):
        if self.position_kind == "xpos":
            return self.position_layer(
                tensor, positions=tensor_positions, downscale=is_key
            )
        return self.position_layer(tensor, positions=tensor_positions)

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        positions=None,
        key_positions=None,
        cache=None,
        cache_update_index=None,
        return_attention_scores=False,
        training=None,
    ):
        key = value if key is None else key
        self._check_call_arguments(
            query,
            value,
            key,
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
            positions,
            key_positions,
            cache,
            cache_update_index,
        )
        clear_keras_masks(query, value, key)
        query_length = ops.shape(query)[1]
        start = 0 if cache_update_index is None else cache_update_index
        query_positions = position_ids(query_length, start, positions)

        q = self.query_dense(query)  # (batch, T, heads, key_dim)
        if cache is not None and cache_update_index is None:
            # A precomputed cache (cross-attention): read it as it is.
            k, v = cache[:, 0], cache[:, 1]
        else:
            k = self.key_dense(key)
            v = self.value_dense(value)
        new_key_positions = key_positions
        if cache is not None and cache_update_index is not None:
            # The new keys are the queries' own tokens: rotate them at the
            # queries' positions, then write them into the cache.
            new_key_positions = query_positions
        elif key_positions is None and positions is not None:
            new_key_positions = positions
        if self.position_kind in ("rotary", "xpos"):
            q = self._rotate(q, query_positions, is_key=False)
            if not (cache is not None and cache_update_index is None):
                k = self._rotate(
                    k,
                    position_ids(ops.shape(k)[1], 0, new_key_positions),
                    is_key=True,
                )
        if cache is not None and cache_update_index is not None:
            if self.value_dim != self.key_dim:
                raise ValueError(
                    "A key/value `cache` needs value_dim == key_dim. Received: "
                    f"key_dim={self.key_dim}, value_dim={self.value_dim}"
                )
            start_indices = [0, cache_update_index, 0, 0]
            k = ops.slice_update(cache[:, 0], start_indices, ops.cast(k, cache.dtype))
            v = ops.slice_update(cache[:, 1], start_indices, ops.cast(v, cache.dtype))
            cache = ops.stack([k, v], axis=1)
        key_length = ops.shape(k)[1]
        if cache is not None:
            key_positions = position_ids(key_length, 0, key_positions)
        else:
            key_positions = position_ids(key_length, 0, new_key_positions)

        causal = None
        if use_causal_mask:
            causal = causal_mask(position_ids(query_length, start), key_length)
        if cache is not None:
            key_mask = value_mask = None  # padding masks do not cover cache slots
        mask = merge_attention_masks(
            query_mask,
            key_mask if key_mask is not None else value_mask,
            attention_mask,
            causal,
        )

        bias = None
        if self.position_kind == "bias":
            bias = self.position_layer.compute_bias(query_positions, key_positions)

        explicit = (
            self.position_kind == "shaw"
            or return_attention_scores
            or (training and self.dropout > 0)
        )
        if explicit:
            output, scores = self._explicit_attention(
                q, k, v, bias, mask, query_positions, key_positions, training
            )
        else:
            output = self._fused_attention(q, k, v, bias, mask)
        output = self.output_dense(output)

        results = (output,)
        if return_attention_scores:
            results += (scores,)
        if cache is not None:
            results += (cache,)
        return results[0] if len(results) == 1 else results

    def _check_call_arguments(
        self,
        query,
        value,
        key,
        query_mask,
        value_mask,
        key_mask,
        attention_mask,
        positions,
        key_positions,
        cache,
        cache_update_index,
    ):
        """Static checks of the call arguments; unknown (None) axes pass."""
        name = self.__class__.__name__
        for argument, tensor in (("query", query), ("value", value), ("key", key)):
            check_float_tensor(name, argument, tensor)
        batch_size, query_length = query.shape[0], query.shape[1]
        for argument, tensor in (("value", value), ("key", key)):
            other_batch = tensor.shape[0]
            if None not in (batch_size, other_batch) and other_batch != batch_size:
                raise ValueError(
                    f"`{argument}` must have the batch size of `query` "
                    f"({batch_size}). Received: {argument}.shape="
                    f"{tuple(tensor.shape)}, query.shape={tuple(query.shape)}"
                )
        key_length, value_length = key.shape[1], value.shape[1]
        if None not in (key_length, value_length) and key_length != value_length:
            raise ValueError(
                "`key` and `value` must have the same length. Received: "
                f"key.shape={tuple(key.shape)}, value.shape={tuple(value.shape)}"
            )
        if cache is not None:
            expected = (batch_size, 2, None, self.num_heads, self.key_dim)
            shape = tuple(cache.shape)
            if len(shape) != 5 or any(
                None not in (dim, want) and dim != want
                for dim, want in zip(shape, expected)
            ):
                raise ValueError(
                    "`cache` must have shape (batch_size, 2, max_length, "
                    f"num_heads={self.num_heads}, key_dim={self.key_dim}). "
                    f"Received: cache.shape={shape}"
                )
            key_length = shape[2]
        if cache_update_index is not None:
            check_start_index(cache_update_index, name="cache_update_index")
        if positions is not None:
            check_positions_shape(positions, query_length, batch_size)
        if key_positions is not None:
            check_key_positions_shape(key_positions, key_length, batch_size)
        check_padding_mask("query_mask", query_mask, batch_size, query_length)
        # Padding masks cover `key`; with a cache the keys are the cache slots.
        check_padding_mask("value_mask", value_mask, batch_size, value_length)
        check_padding_mask("key_mask", key_mask, batch_size, value_length)
        check_attention_mask(
            "attention_mask", attention_mask, batch_size, query_length, key_length
        )

    def _masked_bias(self, bias, mask):
        """Folds the bool mask into the bias: torch's kernel takes only one of them."""
        # Large but finite in float16 too, so a fully masked row stays finite.
        large_negative = ops.cast(-3e4, bias.dtype)
        return ops.where(ops.expand_dims(mask, 1), bias, large_negative)

    def _fused_attention(self, q, k, v, bias, mask):
        if bias is None and mask is not None:
            return ops.dot_product_attention(
                q,
                k,
                v,
                mask=ops.expand_dims(mask, 1),
                scale=1.0 / math.sqrt(self.key_dim),
            )
        if bias is not None and mask is not None:
            bias = self._masked_bias(bias, mask)
        return ops.dot_product_attention(
            q, k, v, bias=bias, scale=1.0 / math.sqrt(self.key_dim)
        )

    def _explicit_attention(
        self, q, k, v, bias, mask, query_positions, key_positions, training
    ):
        logits = ops.einsum("btnh,bsnh->bnts", q, k)  # (batch, heads, T, S)
        if self.position_kind == "shaw":
            logits = logits + self.position_layer.compute_logits(
                q, query_positions, key_positions
            )
        logits = ops.cast(logits, "float32") * (1.0 / math.sqrt(self.key_dim))
        if bias is not None:
            logits = logits + ops.cast(bias, "float32")
        if mask is not None:
            logits = ops.where(ops.expand_dims(mask, 1), logits, -1e9)
        if logits.shape[-1] == 1:
            # `ops.softmax` warns on a key axis of size 1, which a one-token
            # sequence legitimately has: every weight is 1.
            scores = ops.ones_like(logits)
        else:
            scores = ops.softmax(logits, axis=-1)
        probabilities = self.dropout_layer(
            ops.cast(scores, self.compute_dtype), training=training
        )
        output = ops.einsum("bnts,bsnh->btnh", probabilities, v)
        if self.position_kind == "shaw" and self.position_layer.use_values:
            output = output + self.position_layer.compute_values(
                probabilities, query_positions, key_positions
            )
        return output, ops.cast(scores, self.compute_dtype)

    def compute_output_spec(self, query, value, key=None, *args, **kwargs):
        # Symbolic calls may skip `call`: check the dtypes here too.
        for argument, tensor in (("query", query), ("value", value), ("key", key)):
            if tensor is not None:
                check_float_tensor(self.__class__.__name__, argument, tensor)
        return super().compute_output_spec(query, value, key, *args, **kwargs)

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape[:-1]) + (self.output_dim or query_shape[-1],)

    def get_config(self):
        config = super().get_config()
        position = self.position
        if self.position is None and self.position_layer is not None:
            position = keras.saving.serialize_keras_object(self.position_layer)
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "position": position,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

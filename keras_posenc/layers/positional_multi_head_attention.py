import math

import keras
from keras import ops

from keras_posenc import positions as position_schemes
from keras_posenc.utils.attention import biased_attention
from keras_posenc.utils.masks import MASK_BIAS
from keras_posenc.utils.masks import MASKED_LOGIT
from keras_posenc.utils.masks import causal_mask
from keras_posenc.utils.masks import check_attention_mask
from keras_posenc.utils.masks import check_padding_mask
from keras_posenc.utils.masks import clear_keras_masks
from keras_posenc.utils.masks import merge_attention_masks
from keras_posenc.utils.positions import check_key_positions_shape
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import check_start_index
from keras_posenc.utils.positions import default_key_positions
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_layer_keyword_arguments
from keras_posenc.utils.validation import check_non_negative_int
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import check_rate
from keras_posenc.utils.validation import clone_initializer


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
    - `"mrope"`: rotary over several position axes (`positions` of shape
      `(batch, T, num_axes)`);
    - `"fire"`, `"kerple"`: learned functions of the distance added to the
      logits; `"cope"`: CoPE's gated-count positions in a logit term;
    - `"forgetting"`: the forgetting transformer's bias from the layer's own
      inputs (a third cache entry holds it under a cache);
    - `None` / `"none"`: no position information (NoPE).

    Attention runs through `keras.ops.dot_product_attention` (the backend's
    fused kernel where it has one; the scheme's bias and logit term passed
    in as one bias, with `flash_attention=False` so that no backend drops
    it; on JAX a float32 bias takes an einsum route whose bias gradient is
    cheaper, see `keras_posenc.utils.attention`) except where that op
    cannot express the computation: schemes that need the attention weights
    (Shaw with value embeddings), dropout during training, and
    `return_attention_scores=True` take an explicit einsum path.
    `attend(...)` is that core on projected heads.

    With a key/value `cache` (keras-hub's layout `(batch, 2, max_length,
    num_heads, key_dim)`), new keys and values are written at
    `cache_update_index` and the queries get positions
    `cache_update_index + arange(query_length)`, so step-by-step decoding
    equals full decoding for every scheme. A scheme with a token state (the
    forgetting bias) adds a third entry, `(batch, 3, max_length, num_heads,
    key_dim)`, whose channel 0 holds each slot's state (`cache_entries`
    says how many).

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for queries and keys; must be even for
            rotary and xPos.
        value_dim: int or None. Size of each head for values; defaults to
            `key_dim`.
        position: a scheme name (one of `keras_posenc.positions.ATTENTION_NAMES`:
            `"rotary"`, `"xpos"`, `"mrope"`, `"alibi"`, `"t5"`, `"shaw"`,
            `"fire"`, `"kerple"`, `"cope"`, `"forgetting"`; or `"none"`),
            None, a config, or an `AttentionPosition`
            layer (ours with other settings, or a user's own), used as it is
            (see `keras_posenc.positions.get`). The layer talks to it only
            through the `AttentionPosition` hooks. Defaults to None.
        dropout: float in [0, 1). Dropout on the attention probabilities.
        use_bias: bool. Whether the projections have biases.
        output_dim: int or None. Width of the output; defaults to the width of
            the query.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        kernel_regularizer, bias_regularizer, kernel_constraint,
            bias_constraint: of the four projections, as in
            `keras.layers.MultiHeadAttention`.
        output_shape: int, 1-tuple or None. Keras' name for `output_dim`
            (one feature axis only); give one of the two.
        flash_attention: None, True or False. None (the default) lets the
            backend fuse where it can and refuses its flash kernels whenever
            a bias or a mask must be honoured; False never asks for them;
            True asks for them and raises when a scheme bias or a mask is
            present (and, from the backend, where no flash kernel exists,
            e.g. on CPU).
        seed: int or None. Seed of the attention dropout.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        query: `(batch, T, dim)` queries.
        value: `(batch, S, dim)` values.
        key: optional `(batch, S, dim)` keys; defaults to `value`.
        query_mask, value_mask, key_mask: optional `(batch, T)` / `(batch, S)`
            padding masks; filled from Keras masks automatically. With a
            cache that is read, `value_mask`/`key_mask` cover its slots; with
            one that is written they are not used (the causal mask and
            `attention_mask` still are).
        attention_mask: optional bool `(batch, T, S)`, True where attention is
            allowed.
        use_causal_mask: bool. Whether query slot `t` may only see key slots
            `<= t` (offset by `cache_update_index` under a cache).
        positions: optional int `(T,)` or `(batch, T)` positions of the queries
            (e.g. left-padded prompts); defaults to
            `cache_update_index + arange(T)`. A multi-axis scheme also takes
            `(batch, T, num_axes)`.
        key_positions: optional int `(S,)` or `(batch, S)` positions of the
            keys; defaults to `positions` in self-attention without a cache,
            else `arange(S)`.
        cache: optional `(batch, cache_entries, max_length, num_heads,
            key_dim)` tensor.
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
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        output_shape=None,
        flash_attention=None,
        seed=None,
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim)
        check_positive_int("value_dim", value_dim, allow_none=True)
        check_positive_int("output_dim", output_dim, allow_none=True)
        check_rate("dropout", dropout)
        if output_shape is not None:
            # Keras' name; one feature axis only (the blocks' residuals).
            shape = (
                output_shape
                if isinstance(output_shape, (tuple, list))
                else (output_shape,)
            )
            if output_dim is not None or len(shape) != 1:
                raise ValueError(
                    "`output_shape` (Keras' name for `output_dim`) must be an int "
                    "or a 1-tuple, and not given with `output_dim`. Received: "
                    f"output_shape={output_shape!r}, output_dim={output_dim!r}"
                )
            output_dim = check_positive_int("output_shape", shape[0])
        if flash_attention is not None and not isinstance(flash_attention, bool):
            raise ValueError(
                "`flash_attention` must be one of [None, True, False]. "
                f"Received: flash_attention={flash_attention!r}"
            )
        if seed is not None:
            check_non_negative_int("seed", seed)
        position_layer = position_schemes.get_attention(
            position, num_heads=num_heads, dtype=kwargs.get("dtype"), name="position"
        )
        if position_layer is not None:
            try:
                position_layer.check_attention(int(num_heads), int(key_dim))
            except ValueError as error:
                raise ValueError(
                    f"`key_dim` does not suit position={position!r}: {error} "
                    f"Received: key_dim={key_dim}"
                ) from None
        check_layer_keyword_arguments(self, kwargs)
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim or key_dim)
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.flash_attention = flash_attention
        self.seed = seed
        self.supports_masking = True
        # A name stays a name in the config; a layer or config is serialized.
        self.position = position if isinstance(position, str) else None
        self.position_layer = position_layer
        self.dropout_layer = keras.layers.Dropout(
            self.dropout, seed=seed, dtype=self.dtype_policy, name="attention_dropout"
        )

    def _dense(self, equation, output_shape, bias_axes, name):
        return keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
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
        if self.position_layer is not None:
            self.position_layer.build_for_attention(
                (query_shape[0], query_shape[1], self.num_heads, self.key_dim)
            )
            if self.position_layer.has_token_state:
                self.position_layer.build_for_inputs(key_shape)

    @property
    def num_position_axes(self):
        position = self.position_layer
        return 1 if position is None else position.num_position_axes

    @property
    def cache_entries(self):
        """Entries of the cache's second axis: keys, values (and token state)."""
        position = self.position_layer
        return 3 if position is not None and position.has_token_state else 2

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
        reads_cache = cache is not None and cache_update_index is None
        writes_cache = cache is not None and cache_update_index is not None

        q = self.query_dense(query)  # (batch, T, heads, key_dim)
        if reads_cache:
            # A precomputed cache (cross-attention): read it as it is.
            k, v = cache[:, 0], cache[:, 1]
        else:
            k = self.key_dense(key)
            v = self.value_dense(value)
        if writes_cache:
            # The new keys are the queries' own tokens: they take the
            # queries' positions, and go into the cache transformed.
            new_key_positions = query_positions
        else:
            new_key_positions = default_key_positions(
                positions, key_positions, query.shape[1], key.shape[1]
            )
        position = self.position_layer
        state = None
        if position is not None and position.has_token_state:
            if reads_cache or (
                cache is None
                and None not in (query.shape[1], key.shape[1])
                and query.shape[1] != key.shape[1]
            ):
                raise ValueError(
                    f"{position.__class__.__name__} reads the layer's own inputs and "
                    "needs self-attention (keys from the query tokens). Received: "
                    f"query.shape={tuple(query.shape)}, key.shape={tuple(key.shape)}"
                )
            # In the compute dtype, as it would be stored in a cache.
            state = ops.cast(position.compute_token_state(key), self.compute_dtype)
        if position is not None:
            q = position.rotate(q, query_positions, is_key=False)
            if not reads_cache:
                k = position.rotate(
                    k,
                    position_ids(ops.shape(k)[1], 0, new_key_positions),
                    is_key=True,
                )
        if writes_cache:
            if self.value_dim != self.key_dim:
                raise ValueError(
                    "A key/value `cache` needs value_dim == key_dim. Received: "
                    f"key_dim={self.key_dim}, value_dim={self.value_dim}"
                )
            start_indices = [0, cache_update_index, 0, 0]
            k = ops.slice_update(cache[:, 0], start_indices, ops.cast(k, cache.dtype))
            v = ops.slice_update(cache[:, 1], start_indices, ops.cast(v, cache.dtype))
            entries = [k, v]
            if state is not None:
                # The state rides in channel 0 of a third entry.
                padding = [[0, 0]] * 3 + [[0, self.key_dim - 1]]
                new_state = ops.pad(ops.expand_dims(state, -1), padding)
                entries.append(
                    ops.slice_update(
                        cache[:, 2], start_indices, ops.cast(new_state, cache.dtype)
                    )
                )
                state = entries[2][..., 0]
            cache = ops.stack(entries, axis=1)
        key_length = ops.shape(k)[1]
        if cache is not None:
            key_positions = position_ids(key_length, 0, key_positions)
        else:
            key_positions = position_ids(key_length, 0, new_key_positions)

        causal = None
        if use_causal_mask:
            causal = causal_mask(position_ids(query_length, start), key_length)
        state_bias = None
        if state is not None:
            state_bias = position.compute_state_bias(
                state, position_ids(query_length, start)
            )
        if writes_cache:
            # The padding masks cover the new tokens, not the cache's slots.
            key_mask = value_mask = None
        mask = merge_attention_masks(
            query_mask,
            key_mask if key_mask is not None else value_mask,
            attention_mask,
            causal,
        )
        output, scores = self.attend(
            q,
            k,
            v,
            query_positions,
            key_positions,
            mask=mask,
            bias=state_bias,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        output = self.output_dense(output)

        results = (output,)
        if return_attention_scores:
            results += (scores,)
        if cache is not None:
            results += (cache,)
        return results[0] if len(results) == 1 else results

    def attend(
        self,
        query,
        key,
        value,
        query_positions,
        key_positions,
        mask=None,
        bias=None,
        return_attention_scores=False,
        training=None,
    ):
        """The attention core: projected heads in, heads out, the scheme applied.

        Adds the scheme's bias and logit term and, for schemes that need the
        attention weights, its value term. Queries and keys must already be
        transformed by the scheme's `rotate` (the layer's `call` does it,
        before writing keys into a cache).

        Args:
            query: `(batch, T, heads, key_dim)` projected queries.
            key: `(batch, S, heads, key_dim)` projected keys.
            value: `(batch, S, heads, value_dim)` projected values.
            query_positions: int `(T,)` or `(batch, T)`.
            key_positions: int `(S,)` or `(batch, S)`.
            mask: optional bool `(batch or 1, T, S)`, True where allowed.
            bias: optional additive `(batch or 1, heads or 1, T, S)` logit
                bias on top of the scheme's (the forgetting bias of `call`).
            return_attention_scores: bool. Also compute the weights.
            training: bool. Enables dropout on the weights.

        Returns:
            `(output, scores)`: the `(batch, T, heads, value_dim)` output and
            the `(batch, heads, T, S)` weights, or None for the scores when
            the fused kernel ran.
        """
        position = self.position_layer
        if (
            position is not None
            and bias is None
            and not return_attention_scores
            and not (training and self.dropout > 0)
        ):
            # A scheme's own attention (Shaw's, with its written-out
            # gradient) where it has one for these inputs.
            output = position.compute_attention(
                query,
                key,
                value,
                query_positions,
                key_positions,
                scale=1.0 / math.sqrt(self.key_dim),
                mask=mask,
            )
            if output is not None:
                return output, None
        logits = None
        if position is not None:
            position_bias = position.compute_bias(query_positions, key_positions)
            if position_bias is not None:
                bias = (
                    position_bias
                    if bias is None
                    else ops.cast(bias, "float32") + ops.cast(position_bias, "float32")
                )
            logits = position.compute_logits(
                query, query_positions, key_positions, key=key
            )
        explicit = (
            (position is not None and position.needs_attention_weights)
            or return_attention_scores
            or (training and self.dropout > 0)
        )
        if explicit:
            return self._explicit_attention(
                query,
                key,
                value,
                logits,
                bias,
                mask,
                query_positions,
                key_positions,
                training,
            )
        if logits is not None:
            # A content term that needs no weights rides in the fused kernel
            # as part of the bias.
            logits = ops.cast(logits, "float32") * (1.0 / math.sqrt(self.key_dim))
            bias = logits if bias is None else logits + ops.cast(bias, "float32")
        return self._fused_attention(query, key, value, bias, mask), None

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
            entries = self.cache_entries
            expected = (batch_size, entries, None, self.num_heads, self.key_dim)
            shape = tuple(cache.shape)
            if len(shape) != 5 or any(
                None not in (dim, want) and dim != want
                for dim, want in zip(shape, expected)
            ):
                raise ValueError(
                    f"`cache` must have shape (batch_size, {entries}, max_length, "
                    f"num_heads={self.num_heads}, key_dim={self.key_dim}). "
                    f"Received: cache.shape={shape}"
                )
            key_length = shape[2]
            if cache_update_index is None:
                # A cache that is read is the keys: masks cover its slots.
                value_length = key_length
        if cache_update_index is not None:
            check_start_index(cache_update_index, name="cache_update_index")
        if positions is not None:
            check_positions_shape(
                positions, query_length, batch_size, num_axes=self.num_position_axes
            )
        if key_positions is not None:
            check_key_positions_shape(
                key_positions, key_length, batch_size, num_axes=self.num_position_axes
            )
        check_padding_mask("query_mask", query_mask, batch_size, query_length)
        # Padding masks cover `key`, or the slots of a cache that is read.
        check_padding_mask("value_mask", value_mask, batch_size, value_length)
        check_padding_mask("key_mask", key_mask, batch_size, value_length)
        check_attention_mask(
            "attention_mask", attention_mask, batch_size, query_length, key_length
        )

    def _fused_attention(self, q, k, v, bias, mask):
        if bias is not None:
            bias = ops.cast(bias, self.compute_dtype)
            if mask is not None:
                # Torch's kernel takes a bias or a mask, not both: fold the mask.
                bias = ops.where(
                    ops.expand_dims(mask, 1), bias, ops.cast(MASK_BIAS, bias.dtype)
                )
                mask = None
        elif mask is not None:
            mask = ops.expand_dims(mask, 1)
        # With `flash_attention=None`, Keras 3.15's JAX backend takes the
        # Splash kernel on TPU, which ignores `bias` and reads only batch 0 of
        # `mask` (keras/src/backend/jax/nn.py, `dot_product_attention`: "TPU-
        # specific flash attention path", after `_can_use_flash_attention`
        # returns True on TPU without looking at the bias). Whenever a bias
        # or mask must be honoured, the fused call says so.
        flash_attention = self.flash_attention
        if bias is not None or mask is not None:
            if flash_attention:
                raise ValueError(
                    "`flash_attention=True` cannot honour a position bias or an "
                    "attention mask on every backend; use None (fused where "
                    "possible) or False. Received: flash_attention=True"
                )
            flash_attention = False
        scale = 1.0 / math.sqrt(self.key_dim)
        if bias is not None:
            # A learned bias needs its gradient: the route measured fastest.
            return biased_attention(q, k, v, bias, scale)
        return ops.dot_product_attention(
            q, k, v, mask=mask, scale=scale, flash_attention=flash_attention
        )

    def _explicit_attention(
        self,
        q,
        k,
        v,
        position_logits,
        bias,
        mask,
        query_positions,
        key_positions,
        training,
    ):
        logits = ops.einsum("btnh,bsnh->bnts", q, k)  # (batch, heads, T, S)
        if position_logits is not None:
            logits = logits + ops.cast(position_logits, logits.dtype)
        logits = ops.cast(logits, "float32") * (1.0 / math.sqrt(self.key_dim))
        if bias is not None:
            logits = logits + ops.cast(bias, "float32")
        if mask is not None:
            logits = ops.where(ops.expand_dims(mask, 1), logits, MASKED_LOGIT)
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
        position = self.position_layer
        if position is not None and position.needs_attention_weights:
            values = position.compute_values(
                probabilities, query_positions, key_positions
            )
            if values is not None:
                output = output + ops.cast(values, output.dtype)
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
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "position": self.position
                or position_schemes.serialize(self.position_layer),
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "flash_attention": self.flash_attention,
                "seed": self.seed,
            }
        )
        return config

import keras

from keras_posenc.layers.transformer_block import TransformerBlock
from keras_posenc.utils.masks import merge_attention_masks


@keras.saving.register_keras_serializable(package="keras_posenc")
class TransformerDecoder(TransformerBlock):
    """Transformer decoder block: causal self-attention, cross-attention, MLP.

    Causal self-attention with the chosen position scheme, then (when an
    `encoder_sequence` is given at build time) cross-attention to the encoder
    output without positions, then a feed-forward network; each with a
    residual connection, dropout and layer normalization. With
    `position="t5"`, the self-attention uses T5's causal (unidirectional)
    buckets, as in T5's decoder.

    With `self_attention_cache` (shape `(batch, 2, max_length, num_heads,
    head_dim)`) and `self_attention_cache_update_index`, the block processes
    only the new tokens and returns the updated cache: step-by-step decoding
    equals full decoding. A `cross_attention_cache` (shape `(batch, 2, S,
    num_heads, head_dim)`, keras-hub's layout) holds the cross-attention's
    keys and values of the encoder output: with
    `cross_attention_cache_update_index=0` the block computes them from
    `encoder_sequence` and returns the filled cache; with None it reads the
    cache instead of projecting the encoder output again.

    Args:
        intermediate_dim: int. Width of the feed-forward hidden layer.
        num_heads: int. Number of attention heads; must divide the width of
            the inputs.
        dropout: float in [0, 1). Dropout on attention probabilities and
            on each sublayer's output.
        activation: activation of the feed-forward hidden layer.
            Defaults to `"relu"`.
        normalize_first: bool. Pre-norm (`x + f(norm(x))`) if True, post-norm
            (`norm(x + f(x))`, the original Transformer) if False.
        position: the self-attention's scheme: a name (`"rotary"`,
            `"xpos"`, `"alibi"`, `"t5"`, `"shaw"`, `"none"`), None, a config,
            or an `AttentionPosition` layer (see
            `keras_posenc.positions.get`).
        layer_norm_epsilon: float. Epsilon of the layer normalizations.
        kernel_initializer, bias_initializer: initializers of the dense
            kernels and biases.
        intermediate_dropout: bool. Also drop the feed-forward's hidden
            activations if True (the placement of earlier versions); False
            drops only the sublayer outputs, as keras-hub's blocks do.
            Defaults to `False`.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        decoder_sequence: `(batch, T, hidden_dim)` float tensor.
        encoder_sequence: optional `(batch, S, hidden_dim)` encoder output.
        decoder_padding_mask: optional bool `(batch, T)`; defaults to the Keras
            mask of `decoder_sequence`.
        encoder_padding_mask: optional bool `(batch, S)`.
        decoder_attention_mask: optional bool `(batch, T, T)` (`(batch, T,
            max_length)` with a cache), True where a decoder token may
            attend; combined with the causal and padding masks.
        encoder_attention_mask: optional bool `(batch, T, S)` for the
            cross-attention.
        self_attention_cache: optional cache tensor (see above).
        self_attention_cache_update_index: int or scalar int tensor.
        cross_attention_cache: optional cache tensor of the cross-attention
            (see above); needs a block built with an `encoder_sequence`.
        cross_attention_cache_update_index: None (read the cache) or 0
            (fill it from `encoder_sequence`).
        positions: optional int `(T,)` or `(batch, T)` decoder positions.
        use_causal_mask: bool. Defaults to True.
        training: bool.

    Returns:
        The `(batch, T, hidden_dim)` output, then the updated
        `self_attention_cache` if given, then the `cross_attention_cache` if
        given (keras-hub's order).

    Input checks: `decoder_sequence` and `encoder_sequence` must be 3-D
    float tensors with one batch size, the width divisible by `num_heads`
    (into an even head size for rotary and xPos); the padding masks must be
    `(batch, T)` and `(batch, S)`. The attention layers check the rest (see
    `PositionalMultiHeadAttention`). Axes unknown while tracing cannot be
    checked.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> decoder = keras_posenc.layers.TransformerDecoder(
    ...     intermediate_dim=32, num_heads=2, position="rotary")
    >>> x = np.zeros((2, 5, 16), "float32")
    >>> memory = np.zeros((2, 7, 16), "float32")
    >>> tuple(decoder(x, memory).shape)
    (2, 5, 16)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    causal_position = True

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        self.check_input_shape("decoder_sequence", decoder_sequence_shape)
        if encoder_sequence_shape is not None:
            self.check_input_shape("encoder_sequence", encoder_sequence_shape)
        hidden_dim = decoder_sequence_shape[-1]
        self.self_attention = self.make_attention(
            hidden_dim, self.position_layer, "self_attention"
        )
        self.self_attention.build(decoder_sequence_shape, decoder_sequence_shape)
        self.self_attention_norm = self.make_norm("self_attention_norm")
        self.self_attention_norm.build(decoder_sequence_shape)
        self.cross_attention = None
        if encoder_sequence_shape is not None:
            self.cross_attention = self.make_attention(
                hidden_dim, None, "cross_attention"
            )
            self.cross_attention.build(decoder_sequence_shape, encoder_sequence_shape)
            self.cross_attention_norm = self.make_norm("cross_attention_norm")
            self.cross_attention_norm.build(decoder_sequence_shape)
        self.make_feed_forward()
        self.feed_forward.build(decoder_sequence_shape)
        self.feed_forward_norm.build(decoder_sequence_shape)

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        decoder_attention_mask=None,
        encoder_attention_mask=None,
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
        cross_attention_cache_update_index=None,
        positions=None,
        use_causal_mask=True,
        training=None,
        mask=None,
    ):
        if (encoder_sequence is None) != (self.cross_attention is None):
            raise ValueError(
                "Pass `encoder_sequence` on every call if and only if the layer "
                "was built with one (cross-attention). Received: "
                f"encoder_sequence={'None' if encoder_sequence is None else 'a tensor'}"
            )
        self._check_cross_attention_cache(
            cross_attention_cache, cross_attention_cache_update_index
        )
        padding_mask = mask if decoder_padding_mask is None else decoder_padding_mask
        self.check_sequence(
            "decoder_sequence", decoder_sequence, "decoder_padding_mask", padding_mask
        )
        if encoder_sequence is not None:
            self.check_sequence(
                "encoder_sequence",
                encoder_sequence,
                "encoder_padding_mask",
                encoder_padding_mask,
            )
            batch_size = decoder_sequence.shape[0]
            encoder_batch = encoder_sequence.shape[0]
            if None not in (batch_size, encoder_batch) and batch_size != encoder_batch:
                raise ValueError(
                    "`encoder_sequence` must have the batch size of "
                    f"`decoder_sequence` ({batch_size}). Received: "
                    f"encoder_sequence.shape={tuple(encoder_sequence.shape)}"
                )
        cache = self_attention_cache
        x = self.residual(
            decoder_sequence,
            self.self_attention_norm,
            lambda y: self.self_attention(
                y,
                y,
                query_mask=padding_mask,
                value_mask=padding_mask,
                attention_mask=decoder_attention_mask,
                positions=positions,
                use_causal_mask=use_causal_mask,
                cache=cache,
                cache_update_index=self_attention_cache_update_index,
                training=training,
            ),
            training,
        )
        if cache is not None:
            x, cache = x
        cross_cache = cross_attention_cache
        cross_padding_mask = encoder_padding_mask
        cross_attention_mask = encoder_attention_mask
        if cross_cache is not None and cross_attention_cache_update_index is not None:
            # A cache being written ignores padding masks (they cover new
            # tokens, not slots); this one is the whole encoder output, so its
            # padding goes in as an attention mask.
            cross_attention_mask = merge_attention_masks(
                key_mask=encoder_padding_mask, attention_mask=encoder_attention_mask
            )
            cross_padding_mask = None
        if self.cross_attention is not None:
            x = self.residual(
                x,
                self.cross_attention_norm,
                lambda y: self.cross_attention(
                    y,
                    encoder_sequence,
                    query_mask=padding_mask,
                    value_mask=cross_padding_mask,
                    attention_mask=cross_attention_mask,
                    cache=cross_cache,
                    cache_update_index=cross_attention_cache_update_index,
                    training=training,
                ),
                training,
            )
            if cross_cache is not None:
                x, cross_cache = x
        x = self.feed_forward_block(x, training)
        outputs = (x,)
        if cache is not None:
            outputs += (cache,)
        if cross_cache is not None:
            outputs += (cross_cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def _check_cross_attention_cache(self, cache, update_index):
        if cache is None:
            if update_index is not None:
                raise ValueError(
                    "`cross_attention_cache_update_index` needs a "
                    "`cross_attention_cache`. Received: "
                    f"cross_attention_cache_update_index={update_index}"
                )
            return
        if self.cross_attention is None:
            raise ValueError(
                "`cross_attention_cache` needs a decoder built with an "
                "`encoder_sequence` (cross-attention); this one has none."
            )
        if update_index is not None and not (
            isinstance(update_index, int) and update_index == 0
        ):
            raise ValueError(
                "`cross_attention_cache_update_index` must be None (read the "
                "cache) or 0 (fill it from `encoder_sequence`). Received: "
                f"cross_attention_cache_update_index={update_index!r}"
            )

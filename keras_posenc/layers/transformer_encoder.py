import keras

from keras_posenc.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_posenc")
class TransformerEncoder(TransformerBlock):
    """Transformer encoder block whose self-attention takes any position scheme.

    Self-attention (bidirectional unless `use_causal_mask=True`) then a
    feed-forward network, each with a residual connection, dropout and layer
    normalization (Vaswani et al., 2017).

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
        inputs: `(batch, seq, hidden_dim)` float tensor.
        padding_mask: optional bool `(batch, seq)`, True for real tokens;
            defaults to the Keras mask of `inputs`.
        attention_mask: optional bool `(batch, seq, seq)`.
        positions: optional int `(seq,)` or `(batch, seq)` token positions for
            the position scheme (left-padded or packed sequences).
        use_causal_mask: bool. Defaults to False.
        return_attention_scores: bool. Also return the self-attention's
            `(batch, num_heads, seq, seq)` weights, as keras-hub's encoder.
        training: bool.

    Returns:
        A `(batch, seq, hidden_dim)` tensor (and the attention weights with
        `return_attention_scores=True`); the padding mask passes through.

    Input checks: `inputs` must be a 3-D float tensor whose width
    `num_heads` divides (into an even head size for rotary and xPos), and
    `padding_mask` `(batch, seq)`; the attention layer checks the rest (see
    `PositionalMultiHeadAttention`). Axes unknown while tracing cannot be
    checked.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> encoder = keras_posenc.layers.TransformerEncoder(
    ...     intermediate_dim=32, num_heads=2, position="t5")
    >>> tuple(encoder(np.zeros((2, 5, 16), "float32")).shape)
    (2, 5, 16)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def build(self, inputs_shape):
        self.check_input_shape("inputs", inputs_shape)
        hidden_dim = inputs_shape[-1]
        self.self_attention = self.make_attention(
            hidden_dim, self.position_layer, "self_attention"
        )
        self.self_attention.build(inputs_shape, inputs_shape)
        self.self_attention_norm = self.make_norm("self_attention_norm")
        self.self_attention_norm.build(inputs_shape)
        self.make_feed_forward()
        self.feed_forward.build(inputs_shape)
        self.feed_forward_norm.build(inputs_shape)

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        positions=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
        mask=None,
    ):
        padding_mask = mask if padding_mask is None else padding_mask
        self.check_sequence("inputs", inputs, "padding_mask", padding_mask)
        x = self.residual(
            inputs,
            self.self_attention_norm,
            lambda y: self.self_attention(
                y,
                y,
                query_mask=padding_mask,
                value_mask=padding_mask,
                attention_mask=attention_mask,
                positions=positions,
                use_causal_mask=use_causal_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            ),
            training,
        )
        if return_attention_scores:
            x, scores = x
            return self.feed_forward_block(x, training), scores
        return self.feed_forward_block(x, training)

    def compute_output_spec(
        self, inputs, *args, return_attention_scores=False, **kwargs
    ):
        output = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        batch, length = inputs.shape[0], inputs.shape[1]
        scores = keras.KerasTensor(
            (batch, self.num_heads, length, length), dtype=self.compute_dtype
        )
        return output, scores

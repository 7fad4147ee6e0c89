import keras
from keras import ops

from keras_posenc.layers.transformer_encoder import TransformerEncoder
from keras_posenc.models.transformer_model import TransformerLayers
from keras_posenc.models.transformer_model import TransformerModel
from keras_posenc.models.transformer_model import run_blocks
from keras_posenc.utils.validation import check_one_of
from keras_posenc.utils.validation import check_positive_int

POOLING_TYPES = ("mean", "first")


@keras.saving.register_keras_serializable(package="keras_posenc")
class TransformerClassifier(TransformerModel):
    """Transformer encoder that classifies token sequences, with any position scheme.

    Token ids go through a `TokenAndPositionEmbedding` (id 0 is padding),
    `num_layers` `TransformerEncoder` blocks that receive the padding mask, a
    masked pooling over the sequence, dropout and a `Dense(num_classes)` head.
    `position` picks one of `keras_posenc.models.MODEL_POSITIONS`: absolute
    schemes (`"sinusoidal"`, `"learned"`, and their `"_concat"` forms) live in
    the embedding, relative schemes (`"shaw"`, `"t5"`, `"alibi"`, `"rotary"`,
    `"xpos"`) in every self-attention layer, and `"none"` (NoPE) nowhere.

    With `position="none"` and `pooling="mean"` the model is invariant to
    permutations of the tokens: attention without positions is permutation
    equivariant and the mean forgets the order, so such a model cannot use
    word order at all (it sees a bag of tokens).

    The model takes right-padded inputs (real tokens first, then zeros). Right
    padding never changes a prediction. Under left padding the real tokens sit
    at shifted positions, so absolute schemes and `pooling="first"` give
    different predictions; relative schemes and `"none"` with
    `pooling="mean"` do not, since they only see distances between tokens.

    Args:
        vocabulary_size: int. Number of token ids, including the padding id 0.
        num_classes: int. Number of classes.
        max_length: int. Longest sequence the model handles; the size of the
            learned position table.
        hidden_dim: int. Width of the embeddings and the encoder blocks; must be
            divisible by `num_heads`. Defaults to `64`.
        num_layers: int. Number of encoder blocks. Defaults to `2`.
        num_heads: int. Number of attention heads; `hidden_dim // num_heads`
            must be even for `"rotary"` and `"xpos"`. Defaults to `4`.
        intermediate_dim: int. Width of the feed-forward hidden layer.
            Defaults to `128`.
        dropout: float in [0, 1). Dropout in the encoder blocks and before the
            classification head. Defaults to `0.1`.
        position: a name in `keras_posenc.models.MODEL_POSITIONS`, a config
            (`{"class_name": name, "config": {...}}` or a layer config), or a
            layer: an absolute scheme goes to the token embedding, an
            `AttentionPosition` to every self-attention (each block gets its
            own copy; see `keras_posenc.positions.get`). Defaults to `"sinusoidal"`.
        normalize_first: bool. Pre-norm blocks followed by a final layer
            normalization if True, post-norm blocks (the original Transformer)
            if False. Defaults to `False`.
        pooling: `"mean"` (average over the real tokens) or `"first"` (the
            output at the first token, e.g. a `[CLS]` token). Defaults to
            `"mean"`.
        activation: activation of the head, e.g. `"softmax"` for
            probabilities or None for logits. Defaults to `"softmax"`.
        randomize_positions: int or None. Train with randomized positions
            drawn from `range(randomize_positions)`; see `TransformerLM`.
            Defaults to None.
        **kwargs: other keyword arguments of `keras.Model` (e.g. `name`).

    Call arguments:
        token_ids: int tensor of shape `(batch_size, sequence_length)`,
            right-padded with 0, `sequence_length <= max_length`.
        positions: optional int `(batch_size, sequence_length)` or
            `(sequence_length,)` token positions; left-padded rows take
            `cumsum(token_ids != 0) - 1` to match their unpadded form. See
            `TransformerLM`.

    Returns:
        A `(batch_size, num_classes)` tensor of class probabilities (or of
        `activation` applied to the logits).

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> model = keras_posenc.models.TransformerClassifier(
    ...     vocabulary_size=20, num_classes=3, max_length=8, hidden_dim=16,
    ...     num_layers=1, num_heads=2, intermediate_dim=32, position="rotary")
    >>> token_ids = np.array([[5, 3, 9, 0, 0], [4, 4, 1, 7, 2]], "int32")
    >>> tuple(model(token_ids).shape)
    (2, 3)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805) (first-token
          pooling)
    """

    def __init__(
        self,
        vocabulary_size,
        num_classes,
        max_length,
        hidden_dim=64,
        num_layers=2,
        num_heads=4,
        intermediate_dim=128,
        dropout=0.1,
        position="sinusoidal",
        normalize_first=False,
        pooling="mean",
        activation="softmax",
        randomize_positions=None,
        **kwargs,
    ):
        self.check_keyword_arguments(kwargs)
        check_positive_int("num_classes", num_classes)
        check_one_of("pooling", pooling, POOLING_TYPES)
        try:
            head_activation = keras.activations.get(activation)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "`activation` must be an activation name, function or None. "
                f"Received: activation={activation!r}"
            ) from error
        dtype = kwargs.pop("dtype", None)

        # === Layers ===
        make = TransformerLayers.from_model_arguments(locals())
        embedding = make.embedding("embedding")
        encoder_layers = make.blocks(TransformerEncoder, "transformer_layer")
        final_norm = make.final_norm("final_norm")
        pooled_dropout = make.dropout("pooled_dropout", feeds_output=True)
        head = make.output_dense(
            num_classes, "classification_head", activation=head_activation
        )

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        layers = [embedding, *encoder_layers, final_norm, pooled_dropout, head]
        layers.append(make.randomized_positions())
        layers = {layer.name: layer for layer in layers if layer is not None}
        outputs = self.run_layers(layers, token_ids, pooling=pooling)
        super().__init__(inputs=token_ids, outputs=outputs, dtype=dtype, **kwargs)

        self.embedding = embedding
        self.encoder_layers = encoder_layers
        self.set_arguments(
            dtype=dtype,
            **make.arguments,
            num_classes=int(num_classes),
            pooling=pooling,
            activation=keras.activations.serialize(head_activation),
        )

    @staticmethod
    def run_layers(layers, token_ids, positions=None, training=None, pooling=None):
        if pooling is None:
            pooling = layers["pooling"]
        padding_mask = ops.not_equal(token_ids, 0)  # (batch, seq)
        if positions is None and "positions" in layers:
            positions = layers["positions"](token_ids, training=training)
        x = layers["embedding"](token_ids, positions=positions)
        x = run_blocks(
            layers,
            "transformer_layer",
            x,
            padding_mask=padding_mask,
            positions=positions,
            training=training,
        )
        if "final_norm" in layers:
            # Pre-norm blocks leave the residual stream unnormalized.
            x = layers["final_norm"](x)
        if pooling == "first":
            pooled = x[:, 0, :]
        else:
            # `where`, not a product: padded rows may hold non-finite values.
            mask = ops.expand_dims(padding_mask, -1)  # (batch, seq, 1)
            summed = ops.sum(ops.where(mask, x, ops.zeros_like(x)), axis=1)
            count = ops.sum(ops.cast(mask, x.dtype), axis=1)  # (batch, 1)
            pooled = summed / ops.maximum(count, ops.ones_like(count))
        pooled = layers["pooled_dropout"](pooled, training=training)
        return layers["classification_head"](pooled)

    def layers_by_name(self):
        return {**super().layers_by_name(), "pooling": self.pooling}

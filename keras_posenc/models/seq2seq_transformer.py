import keras
from keras import ops

from keras_posenc.layers.transformer_decoder import TransformerDecoder
from keras_posenc.layers.transformer_encoder import TransformerEncoder
from keras_posenc.models.generation import right_padded_ids
from keras_posenc.models.generative_transformer import GenerativeTransformer
from keras_posenc.models.transformer_model import TransformerLayers
from keras_posenc.models.transformer_model import run_blocks


@keras.saving.register_keras_serializable(package="keras_posenc")
class Seq2SeqTransformer(GenerativeTransformer):
    """Encoder-decoder Transformer with a choice of position scheme.

    The encoder embeds the source ids (`TokenAndPositionEmbedding`) and runs
    `num_layers` bidirectional `TransformerEncoder` blocks; the decoder embeds
    the target ids and runs `num_layers` causal `TransformerDecoder` blocks
    that cross-attend to the encoder output (padding masked), then a dense
    layer gives next-token logits. Source and target share one vocabulary
    (each side has its own embedding table). The `position` scheme is used by
    both sides: in the embeddings for absolute schemes, in every
    self-attention for relative schemes (T5 with bidirectional buckets in the
    encoder and causal ones in the decoder, as in T5); cross-attention has no
    positions. With `"none"` the encoder sees its input as an unordered set.
    Token id 0 is padding.

    `generate()` encodes the source once, then decodes from `start_token_id`
    with keras-hub's samplers and a key/value cache in the decoder's
    self-attention. `generate_step()` is its tensor-only core, which
    `keras_posenc.export.export_for_serving` traces into a TensorFlow graph.

    Args:
        vocabulary_size: int. Number of token ids (shared by source and
            target), padding (0) included.
        max_length: int. Longest source and longest target sequence, also
            the size of the learned position tables.
        hidden_dim: int. Width of the embeddings and blocks. Defaults to `64`.
        num_layers: int. Number of encoder blocks and of decoder blocks.
            Defaults to `2`.
        num_heads: int. Attention heads; must divide `hidden_dim` (into an
            even head size for rotary and xPos). Defaults to `4`.
        intermediate_dim: int. Width of the feed-forward hidden layers.
            Defaults to `128`.
        dropout: float in [0, 1). Dropout after the embeddings and inside the
            blocks. Defaults to `0.1`.
        position: a name in `keras_posenc.models.MODEL_POSITIONS`, a config
            (`{"class_name": name, "config": {...}}` or a layer config), or a
            layer: an absolute scheme goes to the token embedding, an
            `AttentionPosition` to every self-attention (each block gets its
            own copy; see `keras_posenc.positions.get`). Defaults to
            `"sinusoidal"`, the original Transformer's.
        normalize_first: bool. Pre-norm blocks and a final layer
            normalization on each side if True; post-norm blocks (the original
            Transformer) if False. Defaults to `False`.
        randomize_positions: int or None. Train with randomized positions
            drawn from `range(randomize_positions)`, on both sides; see
            `TransformerLM`. Defaults to None.
        **kwargs: other keyword arguments of `keras.Model` (`name`, `dtype`).

    Call arguments:
        inputs: dict with `"encoder_token_ids"`, int `(batch_size, S)`, and
            `"decoder_token_ids"`, int `(batch_size, T)`, both right-padded
            with 0; or the list `[encoder_token_ids, decoder_token_ids]`.
        positions: optional dict with `"encoder_positions"` and/or
            `"decoder_positions"`, int positions shaped as the ids they
            number (e.g. left-padded sources numbered
            `cumsum(ids != 0) - 1`). See `TransformerLM`.

    Returns:
        Logits of shape `(batch_size, T, vocabulary_size)`: decoder position
        `t` scores target token `t + 1`.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> model = keras_posenc.models.Seq2SeqTransformer(
    ...     vocabulary_size=20, max_length=10, hidden_dim=16, num_layers=1,
    ...     num_heads=2, intermediate_dim=32, position="t5")
    >>> logits = model({"encoder_token_ids": np.array([[5, 6, 7, 0]]),
    ...                 "decoder_token_ids": np.array([[1, 7, 6]])})
    >>> tuple(logits.shape)
    (1, 3, 20)
    >>> model.generate([[5, 6, 7], [8, 9]], max_length=6, start_token_id=1).shape
    (2, 6)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Raffel et al., 2020](https://arxiv.org/abs/1910.10683) (T5)
        - [Lewis et al., 2020](https://arxiv.org/abs/1910.13461) (BART)
    """

    def __init__(
        self,
        vocabulary_size,
        max_length,
        hidden_dim=64,
        num_layers=2,
        num_heads=4,
        intermediate_dim=128,
        dropout=0.1,
        position="sinusoidal",
        normalize_first=False,
        randomize_positions=None,
        **kwargs,
    ):
        self.check_keyword_arguments(kwargs)
        dtype = kwargs.pop("dtype", None)
        make = TransformerLayers.from_model_arguments(locals())
        encoder_embedding = make.embedding("encoder_embedding")
        encoder_embedding_dropout = make.dropout("encoder_embedding_dropout")
        encoder_layers = make.blocks(TransformerEncoder, "encoder_layer")
        encoder_final_norm = make.final_norm("encoder_final_norm", feeds_output=False)
        decoder_embedding = make.embedding("decoder_embedding")
        decoder_embedding_dropout = make.dropout("decoder_embedding_dropout")
        decoder_layers = make.blocks(TransformerDecoder, "decoder_layer")
        decoder_final_norm = make.final_norm("decoder_final_norm")
        logits_dense = make.output_dense(vocabulary_size, "logits")

        encoder_token_ids = keras.Input(
            shape=(None,), dtype="int32", name="encoder_token_ids"
        )
        decoder_token_ids = keras.Input(
            shape=(None,), dtype="int32", name="decoder_token_ids"
        )
        layers = [encoder_embedding, encoder_embedding_dropout, *encoder_layers]
        layers += [encoder_final_norm, make.randomized_positions("encoder_positions")]
        layers += [decoder_embedding, decoder_embedding_dropout, *decoder_layers]
        layers += [decoder_final_norm, make.randomized_positions("decoder_positions")]
        layers.append(logits_dense)
        layers = {layer.name: layer for layer in layers if layer is not None}
        logits = self.run_layers(
            layers,
            {
                "encoder_token_ids": encoder_token_ids,
                "decoder_token_ids": decoder_token_ids,
            },
        )
        super().__init__(
            inputs={
                "encoder_token_ids": encoder_token_ids,
                "decoder_token_ids": decoder_token_ids,
            },
            outputs=logits,
            dtype=dtype,
            **kwargs,
        )

        self.encoder_embedding = encoder_embedding
        self.encoder_embedding_dropout = encoder_embedding_dropout
        self.encoder_layers = encoder_layers
        self.encoder_final_norm = encoder_final_norm
        self.decoder_embedding = decoder_embedding
        self.decoder_embedding_dropout = decoder_embedding_dropout
        self.decoder_layers = decoder_layers
        self.decoder_final_norm = decoder_final_norm
        self.logits_dense = logits_dense
        self.set_arguments(
            dtype=dtype,
            **make.arguments,
        )

    POSITION_INPUTS = ("encoder_positions", "decoder_positions")

    @staticmethod
    def run_layers(layers, inputs, positions=None, training=None):
        positions = dict(positions or {})
        for side in ("encoder", "decoder"):
            key = f"{side}_positions"
            if key not in positions and key in layers:
                positions[key] = layers[key](
                    inputs[f"{side}_token_ids"], training=training
                )

        encoder_token_ids = inputs["encoder_token_ids"]
        decoder_token_ids = inputs["decoder_token_ids"]
        encoder_padding_mask = ops.not_equal(encoder_token_ids, 0)
        decoder_padding_mask = ops.not_equal(decoder_token_ids, 0)
        encoder_positions = positions.get("encoder_positions")
        x = layers["encoder_embedding"](encoder_token_ids, positions=encoder_positions)
        x = layers["encoder_embedding_dropout"](x, training=training)
        x = run_blocks(
            layers,
            "encoder_layer",
            x,
            padding_mask=encoder_padding_mask,
            positions=encoder_positions,
            training=training,
        )
        if "encoder_final_norm" in layers:
            x = layers["encoder_final_norm"](x)
        encoder_outputs = x
        x = layers["decoder_embedding"](
            decoder_token_ids, positions=positions.get("decoder_positions")
        )
        x = layers["decoder_embedding_dropout"](x, training=training)
        x = run_blocks(
            layers,
            "decoder_layer",
            x,
            encoder_outputs,
            decoder_padding_mask=decoder_padding_mask,
            encoder_padding_mask=encoder_padding_mask,
            positions=positions.get("decoder_positions"),
            training=training,
        )
        if "decoder_final_norm" in layers:
            x = layers["decoder_final_norm"](x)
        return layers["logits"](x)

    def encode(self, encoder_token_ids):
        """`(batch, S, hidden_dim)` encoder outputs for right-padded source ids."""
        padding_mask = ops.not_equal(encoder_token_ids, 0)
        x = self.encoder_embedding(encoder_token_ids)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=padding_mask, training=False)
        if self.encoder_final_norm is not None:
            x = self.encoder_final_norm(x)
        return x

    def call_with_cache(
        self,
        decoder_token_ids,
        cache,
        cache_update_index,
        encoder_outputs,
        encoder_padding_mask,
    ):
        """Runs decoder tokens at `cache_update_index` with a self-attention cache.

        Args:
            decoder_token_ids: int tensor `(batch, T)`, the tokens at slots
                `cache_update_index ... cache_update_index + T - 1`.
            cache: float tensor `(batch, num_layers, 2, max_length, num_heads,
                head_dim)` of the decoder's self-attention keys and values.
            cache_update_index: int or scalar int tensor.
            encoder_outputs: `(batch, S, hidden_dim)` from `encode()`.
            encoder_padding_mask: bool `(batch, S)`, True for real source tokens.

        Returns:
            `(logits, hidden_states, cache)`: `(batch, T, vocabulary_size)`
            logits, the `(batch, T, hidden_dim)` final hidden states and the
            updated cache.
        """
        x = self.decoder_embedding(decoder_token_ids, start_index=cache_update_index)
        return self.decode_with_cache(
            self.decoder_layers,
            x,
            cache,
            cache_update_index,
            self.decoder_final_norm,
            encoder_sequence=encoder_outputs,
            encoder_padding_mask=encoder_padding_mask,
        )

    def _generation_inputs(self, inputs, max_length, start_token_id):
        if max_length < 2:
            raise ValueError(
                "`max_length` must be at least 2 (the start token and one "
                f"generated token). Received: max_length={max_length}"
            )
        source, lengths = right_padded_ids(
            "encoder_token_ids", inputs, self.vocabulary_size
        )
        if lengths.max() > self.max_length:
            raise ValueError(
                f"`encoder_token_ids` holds a source of {lengths.max()} tokens, "
                f"longer than the model's max_length={self.max_length}."
            )
        return source[:, : lengths.max()]

    def _generation_prompt(self, inputs, max_length, start_token_id):
        max_length = self.max_length if max_length is None else max_length
        start_token_id = 1 if start_token_id is None else start_token_id
        batch_size = ops.shape(inputs)[0]
        token_ids = ops.concatenate(
            [
                ops.full((batch_size, 1), start_token_id, dtype="int32"),
                ops.zeros((batch_size, max_length - 1), dtype="int32"),
            ],
            axis=1,
        )
        return token_ids, 1, inputs

    def _initial_cache(self, token_ids, source):
        # The encoder outputs ride in the sampler's cache, so that beam search
        # repeats and reorders them with the beams (as keras-hub's BART does).
        encoder_padding_mask = ops.not_equal(source, 0)
        encoder_outputs = self.encode(source)
        cache = self.empty_cache(ops.shape(token_ids)[0], ops.shape(token_ids)[1])
        _, hidden_states, cache = self.call_with_cache(
            token_ids, cache, 0, encoder_outputs, encoder_padding_mask
        )
        return hidden_states, (cache, encoder_outputs, encoder_padding_mask)

    def _cached_logits(self, token, cache, index):
        cache, encoder_outputs, encoder_padding_mask = cache
        logits, hidden_states, cache = self.call_with_cache(
            token, cache, index, encoder_outputs, encoder_padding_mask
        )
        return logits, hidden_states, (cache, encoder_outputs, encoder_padding_mask)

    def _full_logits(self, token_ids, source):
        inputs = {"encoder_token_ids": source, "decoder_token_ids": token_ids}
        return self(inputs, training=False)

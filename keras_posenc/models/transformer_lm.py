import keras
from keras import ops

from keras_posenc.layers.transformer_decoder import TransformerDecoder
from keras_posenc.models.generation import pad_to
from keras_posenc.models.generation import right_padded_ids
from keras_posenc.models.generative_transformer import GenerativeTransformer
from keras_posenc.models.transformer_model import TransformerLayers
from keras_posenc.models.transformer_model import run_blocks


@keras.saving.register_keras_serializable(package="keras_posenc")
class TransformerLM(GenerativeTransformer):
    """Decoder-only Transformer language model with a choice of position scheme.

    Token ids go through a `TokenAndPositionEmbedding`, `num_layers` causal
    `TransformerDecoder` blocks (no cross-attention), a final layer
    normalization when `normalize_first` (pre-norm blocks need one), and a
    dense layer to next-token logits. The `position` scheme lives in the
    embedding (absolute schemes) or in every self-attention (relative
    schemes); `"none"` is NoPE, where only the causal mask tells positions
    apart. Token id 0 is padding.

    `generate()` decodes with keras-hub's samplers (greedy, top-k, top-p,
    beam search) and a key/value cache: the prompt is run once to fill the
    cache, then each step runs only the newest token through
    `call_with_cache()`, and gives the tokens of the full forward pass.
    `generate_step()` is its tensor-only core, which
    `keras_posenc.export.export_for_serving` traces into a TensorFlow graph.

    Args:
        vocabulary_size: int. Number of token ids, padding (0) included.
        max_length: int. Longest sequence the model handles, also the size
            of the learned position table.
        hidden_dim: int. Width of the embeddings and blocks. Defaults to `64`.
        num_layers: int. Number of decoder blocks. Defaults to `2`.
        num_heads: int. Attention heads; must divide `hidden_dim` (into an
            even head size for rotary and xPos). Defaults to `4`.
        intermediate_dim: int. Width of the feed-forward hidden layers.
            Defaults to `128`.
        dropout: float in [0, 1). Dropout after the embedding and inside the
            blocks. Defaults to `0.1`.
        position: a name in `keras_posenc.models.MODEL_POSITIONS`, a config
            (`{"class_name": name, "config": {...}}` or a layer config), or a
            layer: an absolute scheme goes to the token embedding, an
            `AttentionPosition` to every self-attention (each block gets its
            own copy; see `keras_posenc.positions.get`). Defaults to
            `"rotary"`, the scheme of most current decoder-only models.
        normalize_first: bool. Pre-norm blocks and a final layer
            normalization if True, post-norm blocks otherwise. Defaults to
            `True`.
        randomize_positions: int or None. Randomized positional encodings
            (Ruoss et al., 2023): in training, each example's positions are a
            sorted random subset of `range(randomize_positions)` (at least
            `max_length`; learned tables get that many rows); at inference
            `0, 1, ...`. Works with every scheme. Defaults to None.
        **kwargs: other keyword arguments of `keras.Model` (`name`, `dtype`).

    Call arguments:
        token_ids: int tensor `(batch_size, sequence_length)`, padded with 0.
        positions: optional int tensor `(batch_size, sequence_length)` (or
            `(sequence_length,)`): the position of each token, for every
            scheme. Left-padded rows take
            `ops.cumsum(ops.not_equal(token_ids, 0), axis=1) - 1`, so that
            their tokens are numbered `0, 1, ...` as unpadded ones are.
            Defaults to `0, 1, ...` (randomized in training with
            `randomize_positions`).

    Returns:
        Logits of shape `(batch_size, sequence_length, vocabulary_size)`:
        position `t` scores token `t + 1`.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> model = keras_posenc.models.TransformerLM(
    ...     vocabulary_size=20, max_length=12, hidden_dim=16, num_layers=1,
    ...     num_heads=2, intermediate_dim=32, position="alibi")
    >>> tuple(model(np.array([[3, 4, 5, 0]])).shape)
    (1, 4, 20)
    >>> model.generate([[3, 4, 5], [6, 7]], max_length=8).shape
    (2, 8)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Radford et al., 2019](https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf)
        - [Kazemnejad et al., 2023](https://arxiv.org/abs/2305.19466) (NoPE)
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
        position="rotary",
        normalize_first=True,
        randomize_positions=None,
        **kwargs,
    ):
        self.check_keyword_arguments(kwargs)
        dtype = kwargs.pop("dtype", None)
        make = TransformerLayers.from_model_arguments(locals())
        embedding = make.embedding("embedding")
        embedding_dropout = make.dropout("embedding_dropout")
        decoder_layers = make.blocks(TransformerDecoder, "decoder_layer")
        final_norm = make.final_norm("final_norm")
        logits_dense = make.output_dense(vocabulary_size, "logits")
        randomized = make.randomized_positions()

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        layers = [embedding, embedding_dropout, *decoder_layers, final_norm]
        layers += [logits_dense, randomized]
        layers = {layer.name: layer for layer in layers if layer is not None}
        logits = self.run_layers(layers, token_ids)
        super().__init__(inputs=token_ids, outputs=logits, dtype=dtype, **kwargs)

        self.embedding = embedding
        self.embedding_dropout = embedding_dropout
        self.decoder_layers = decoder_layers
        self.final_norm = final_norm
        self.logits_dense = logits_dense
        self.set_arguments(
            dtype=dtype,
            **make.arguments,
        )

    @staticmethod
    def run_layers(layers, token_ids, positions=None, training=None):
        padding_mask = ops.not_equal(token_ids, 0)
        if positions is None and "positions" in layers:
            positions = layers["positions"](token_ids, training=training)
        x = layers["embedding"](token_ids, positions=positions)
        x = layers["embedding_dropout"](x, training=training)
        x = run_blocks(
            layers,
            "decoder_layer",
            x,
            decoder_padding_mask=padding_mask,
            positions=positions,
            training=training,
        )
        if "final_norm" in layers:
            x = layers["final_norm"](x)
        return layers["logits"](x)

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Runs `token_ids` at `cache_update_index` with a key/value cache.

        Args:
            token_ids: int tensor `(batch, T)`, the tokens at slots
                `cache_update_index ... cache_update_index + T - 1`.
            cache: float tensor `(batch, num_layers, 2, max_length, num_heads,
                head_dim)`. Batch comes first so that keras-hub's beam search
                can repeat and reorder it.
            cache_update_index: int or scalar int tensor.

        Returns:
            `(logits, hidden_states, cache)`: `(batch, T, vocabulary_size)`
            logits, the `(batch, T, hidden_dim)` final hidden states and the
            updated cache.
        """
        x = self.embedding(token_ids, start_index=cache_update_index)
        return self.decode_with_cache(
            self.decoder_layers, x, cache, cache_update_index, self.final_norm
        )

    def build_cache(self, token_ids):
        """`(hidden_states, cache)` after one cached pass over `token_ids`."""
        cache = self.empty_cache(ops.shape(token_ids)[0], ops.shape(token_ids)[1])
        _, hidden_states, cache = self.call_with_cache(token_ids, cache, 0)
        return hidden_states, cache

    def _generation_inputs(self, inputs, max_length, start_token_id):
        if start_token_id is not None:
            raise ValueError(
                "`start_token_id` applies to encoder-decoder models; a "
                "TransformerLM continues its prompts. Received: "
                f"start_token_id={start_token_id}"
            )
        prompt, lengths = right_padded_ids("prompt_ids", inputs, self.vocabulary_size)
        if lengths.max() > max_length:
            raise ValueError(
                f"`prompt_ids` holds a prompt of {lengths.max()} tokens, longer "
                f"than max_length={max_length}."
            )
        return pad_to(prompt[:, : lengths.max()], max_length)

    def _generation_prompt(self, inputs, max_length, start_token_id):
        width = inputs.shape[1]
        if max_length is not None and width is not None and width < max_length:
            inputs = ops.pad(inputs, [[0, 0], [0, max_length - width]])
        # Generation starts after the shortest prompt; the sampler leaves the
        # longer prompts' own ids in place.
        index = ops.min(ops.sum(ops.cast(ops.not_equal(inputs, 0), "int32"), axis=1))
        return inputs, index, None

    def _initial_cache(self, token_ids, context):
        return self.build_cache(token_ids)

    def _cached_logits(self, token, cache, index):
        return self.call_with_cache(token, cache, index)

    def _full_logits(self, token_ids, context):
        return self(token_ids, training=False)

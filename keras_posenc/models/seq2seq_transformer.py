import keras
import numpy as np
from keras import ops

from keras_posenc.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_posenc.layers.transformer_decoder import TransformerDecoder
from keras_posenc.layers.transformer_encoder import TransformerEncoder
from keras_posenc.models.generation import check_generate_arguments
from keras_posenc.models.generation import clear_after_stop
from keras_posenc.models.generation import get_sampler
from keras_posenc.models.generation import right_padded_ids
from keras_posenc.models.generation import suppress_padding
from keras_posenc.models.model_arguments import check_transformer_arguments
from keras_posenc.models.position_schemes import attention_position
from keras_posenc.models.position_schemes import embedding_arguments
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import check_token_ids


@keras.saving.register_keras_serializable(package="keras_posenc")
class Seq2SeqTransformer(keras.Model):
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
        position: one of `keras_posenc.models.MODEL_POSITIONS`. Defaults to
            `"sinusoidal"`, the original Transformer's.
        normalize_first: bool. Pre-norm blocks and a final layer
            normalization on each side if True; post-norm blocks (the original
            Transformer) if False. Defaults to `False`.
        **kwargs: other keyword arguments of `keras.Model` (`name`, `dtype`).

    Call arguments:
        inputs: dict with `"encoder_token_ids"`, int `(batch_size, S)`, and
            `"decoder_token_ids"`, int `(batch_size, T)`, both right-padded
            with 0.

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
        **kwargs,
    ):
        check_transformer_arguments(
            vocabulary_size,
            max_length,
            hidden_dim,
            num_layers,
            num_heads,
            intermediate_dim,
            dropout,
            position,
            normalize_first,
        )
        dtype = kwargs.pop("dtype", None)

        def embedding(name):
            return TokenAndPositionEmbedding(
                vocabulary_size=vocabulary_size,
                max_length=max_length,
                mask_zero=True,
                dtype=dtype,
                name=name,
                **embedding_arguments(position, hidden_dim),
            )

        def block_arguments(name):
            return {
                "intermediate_dim": intermediate_dim,
                "num_heads": num_heads,
                "dropout": dropout,
                "normalize_first": normalize_first,
                "position": attention_position(position),
                "dtype": dtype,
                "name": name,
            }

        def final_norm(name):
            if not normalize_first:
                return None
            return keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype, name=name)

        # The layers are created before `super().__init__` (the functional
        # graph needs them) and assigned as attributes after it (PyTorch
        # modules cannot be assigned earlier).
        encoder_embedding = embedding("encoder_embedding")
        encoder_embedding_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="encoder_embedding_dropout"
        )
        encoder_layers = [
            TransformerEncoder(**block_arguments(f"encoder_layer_{index}"))
            for index in range(num_layers)
        ]
        encoder_final_norm = final_norm("encoder_final_norm")
        decoder_embedding = embedding("decoder_embedding")
        decoder_embedding_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="decoder_embedding_dropout"
        )
        decoder_layers = [
            TransformerDecoder(**block_arguments(f"decoder_layer_{index}"))
            for index in range(num_layers)
        ]
        decoder_final_norm = final_norm("decoder_final_norm")
        logits_dense = keras.layers.Dense(vocabulary_size, dtype=dtype, name="logits")

        encoder_token_ids = keras.Input(
            shape=(None,), dtype="int32", name="encoder_token_ids"
        )
        decoder_token_ids = keras.Input(
            shape=(None,), dtype="int32", name="decoder_token_ids"
        )
        encoder_padding_mask = ops.not_equal(encoder_token_ids, 0)
        decoder_padding_mask = ops.not_equal(decoder_token_ids, 0)
        x = encoder_embedding_dropout(encoder_embedding(encoder_token_ids))
        for layer in encoder_layers:
            x = layer(x, padding_mask=encoder_padding_mask)
        encoder_outputs = x if encoder_final_norm is None else encoder_final_norm(x)
        x = decoder_embedding_dropout(decoder_embedding(decoder_token_ids))
        for layer in decoder_layers:
            x = layer(
                x,
                encoder_outputs,
                decoder_padding_mask=decoder_padding_mask,
                encoder_padding_mask=encoder_padding_mask,
            )
        if decoder_final_norm is not None:
            x = decoder_final_norm(x)
        logits = logits_dense(x)
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

        self.vocabulary_size = int(vocabulary_size)
        self.max_length = int(max_length)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.position = position
        self.normalize_first = normalize_first

    def encode(self, encoder_token_ids):
        """`(batch, S, hidden_dim)` encoder outputs for right-padded source ids."""
        padding_mask = ops.not_equal(encoder_token_ids, 0)
        x = self.encoder_embedding(encoder_token_ids)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=padding_mask, training=False)
        if self.encoder_final_norm is not None:
            x = self.encoder_final_norm(x)
        return x

    def call(self, inputs, training=None, mask=None):
        check_token_ids(inputs)
        return super().call(inputs, training=training, mask=mask)

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
        # In the cache every slot up to the query is a real token (later
        # slots are hidden by the causal mask), so no padding mask is used.
        no_padding = ops.ones(ops.shape(decoder_token_ids), dtype="bool")
        caches = []
        for index, layer in enumerate(self.decoder_layers):
            x, layer_cache = layer(
                x,
                encoder_outputs,
                decoder_padding_mask=no_padding,
                encoder_padding_mask=encoder_padding_mask,
                self_attention_cache=cache[:, index],
                self_attention_cache_update_index=cache_update_index,
                training=False,
            )
            caches.append(layer_cache)
        if self.decoder_final_norm is not None:
            x = self.decoder_final_norm(x)
        return self.logits_dense(x), x, ops.stack(caches, axis=1)

    def generate(
        self,
        encoder_token_ids,
        max_length=None,
        sampler="greedy",
        start_token_id=1,
        stop_token_id=None,
        use_cache=True,
    ):
        """Decodes targets for right-padded sources with a keras-hub sampler.

        The decoder starts from `start_token_id`; the source is encoded once.
        keras-hub is needed here only.

        Args:
            encoder_token_ids: int array, tensor or list of lists `(batch, S)`
                of sources right-padded with 0.
            max_length: int. Length of the output, start token included; at
                most the model's `max_length`, its default.
            sampler: `"greedy"`, `"top_k"`, `"top_p"`, `"beam"` or a
                `keras_hub.samplers.Sampler` instance. Names take keras-hub's
                defaults (`top_k`: k=5; `top_p`: p=0.1, nearly greedy;
                `beam`: 5 beams); pass e.g. `TopPSampler(p=0.9)` for others.
                Defaults to `"greedy"`.
            start_token_id: int. First decoder token. Defaults to `1`.
            stop_token_id: int or None. Generation stops once every sequence
                has produced it; later ids are set to 0.
            use_cache: bool. Decode with the key/value cache (one token per
                step) if True, else rerun the whole model at each step (the
                slow reference). Defaults to `True`.

        Returns:
            Numpy int32 array `(batch, max_length)` starting with
            `start_token_id`.
        """
        max_length = check_generate_arguments(
            max_length, self.max_length, stop_token_id, use_cache
        )
        for name, value in (
            ("start_token_id", start_token_id),
            ("stop_token_id", stop_token_id),
        ):
            if value is None:
                continue
            check_positive_int(name, value)
            if value >= self.vocabulary_size:
                raise ValueError(
                    f"`{name}` must be below vocabulary_size={self.vocabulary_size}."
                    f" Received: {name}={value}"
                )
        if max_length < 2:
            raise ValueError(
                "`max_length` must be at least 2 (the start token and one "
                f"generated token). Received: max_length={max_length}"
            )
        get_sampler(sampler)
        source, lengths = right_padded_ids(
            "encoder_token_ids", encoder_token_ids, self.vocabulary_size
        )
        if lengths.max() > self.max_length:
            raise ValueError(
                f"`encoder_token_ids` holds a source of {lengths.max()} tokens, "
                f"longer than the model's max_length={self.max_length}."
            )
        output = self.generate_step(
            ops.convert_to_tensor(source[:, : lengths.max()], dtype="int32"),
            max_length,
            sampler=sampler,
            start_token_id=start_token_id,
            stop_token_id=stop_token_id,
            use_cache=use_cache,
        )
        return np.asarray(ops.convert_to_numpy(output)).astype("int32")

    def generate_step(
        self,
        encoder_token_ids,
        max_length,
        sampler="greedy",
        start_token_id=1,
        stop_token_id=None,
        use_cache=True,
    ):
        """Tensor-only core of `generate()`, also traced into serving graphs.

        Unlike `generate()`, it checks nothing, so that it runs inside a
        `tf.function`.

        Args:
            encoder_token_ids: int tensor `(batch, S)` of sources right-padded
                with 0, `S` at most the model's `max_length`.
            max_length: int. Length of the output, start token included; at
                most the model's `max_length`.
            sampler: `"greedy"`, `"top_k"`, `"top_p"`, `"beam"` or a
                `keras_hub.samplers.Sampler` instance. Names take keras-hub's
                defaults (`top_k`: k=5; `top_p`: p=0.1, nearly greedy;
                `beam`: 5 beams); pass e.g. `TopPSampler(p=0.9)` for others.
                Defaults to `"greedy"`.
            start_token_id: int. First decoder token. Defaults to `1`.
            stop_token_id: int or None. Generation stops once every sequence
                has produced it; later ids are set to 0.
            use_cache: bool. Decode with the key/value cache if True.
                Defaults to `True`.

        Returns:
            Int32 tensor `(batch, max_length)` starting with `start_token_id`.
        """
        sampler = get_sampler(sampler)
        source = ops.cast(encoder_token_ids, "int32")
        batch_size = ops.shape(source)[0]
        token_ids = ops.concatenate(
            [
                ops.full((batch_size, 1), start_token_id, dtype="int32"),
                ops.zeros((batch_size, max_length - 1), dtype="int32"),
            ],
            axis=1,
        )
        prompt_mask = ops.not_equal(token_ids, 0)

        # The encoder outputs ride in the sampler's cache, so that beam search
        # repeats and reorders them with the beams (as keras-hub's BART does).
        if use_cache:
            encoder_padding_mask = ops.not_equal(source, 0)
            encoder_outputs = self.encode(source)
            head_dim = self.hidden_dim // self.num_heads
            cache = ops.zeros(
                (batch_size, self.num_layers, 2, max_length, self.num_heads, head_dim),
                dtype=self.compute_dtype,
            )
            _, hidden_states, cache = self.call_with_cache(
                token_ids, cache, 0, encoder_outputs, encoder_padding_mask
            )
            cache = (cache, encoder_outputs, encoder_padding_mask)

            def next(prompt, cache, index):
                cache, encoder_outputs, encoder_padding_mask = cache
                token = ops.slice(prompt, [0, index - 1], [ops.shape(prompt)[0], 1])
                logits, hidden_states, cache = self.call_with_cache(
                    token, cache, index - 1, encoder_outputs, encoder_padding_mask
                )
                return (
                    suppress_padding(ops.squeeze(logits, axis=1)),
                    ops.squeeze(hidden_states, axis=1),
                    (cache, encoder_outputs, encoder_padding_mask),
                )

        else:
            hidden_states, cache = None, (source,)

            def next(prompt, cache, index):
                inputs = {"encoder_token_ids": cache[0], "decoder_token_ids": prompt}
                logits = self(inputs, training=False)
                logits = ops.slice(
                    logits,
                    [0, index - 1, 0],
                    [ops.shape(prompt)[0], 1, self.vocabulary_size],
                )
                return suppress_padding(ops.squeeze(logits, axis=1)), None, cache

        output = sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=1,
            mask=prompt_mask,
            stop_token_ids=None if stop_token_id is None else (stop_token_id,),
            hidden_states=hidden_states,
            model=self,
        )
        return clear_after_stop(ops.cast(output, "int32"), prompt_mask, stop_token_id)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_length": self.max_length,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "position": self.position,
                "normalize_first": self.normalize_first,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

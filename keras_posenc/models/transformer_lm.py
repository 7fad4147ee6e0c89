import keras
import numpy as np
from keras import ops

from keras_posenc.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_posenc.layers.transformer_decoder import TransformerDecoder
from keras_posenc.models.generation import check_generate_arguments
from keras_posenc.models.generation import clear_after_stop
from keras_posenc.models.generation import get_sampler
from keras_posenc.models.generation import pad_to
from keras_posenc.models.generation import right_padded_ids
from keras_posenc.models.generation import suppress_padding
from keras_posenc.models.model_arguments import check_transformer_arguments
from keras_posenc.models.position_schemes import attention_position
from keras_posenc.models.position_schemes import embedding_arguments
from keras_posenc.utils.validation import check_token_ids


@keras.saving.register_keras_serializable(package="keras_posenc")
class TransformerLM(keras.Model):
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
        position: one of `keras_posenc.models.MODEL_POSITIONS`. Defaults to
            `"rotary"`, the scheme of most current decoder-only models.
        normalize_first: bool. Pre-norm blocks and a final layer
            normalization if True, post-norm blocks otherwise. Defaults to
            `True`.
        **kwargs: other keyword arguments of `keras.Model` (`name`, `dtype`).

    Call arguments:
        token_ids: int tensor `(batch_size, sequence_length)`, right-padded
            with 0.

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
        # The layers are created before `super().__init__` (the functional
        # graph needs them) and assigned as attributes after it (PyTorch
        # modules cannot be assigned earlier).
        embedding = TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size,
            max_length=max_length,
            mask_zero=True,
            dtype=dtype,
            name="embedding",
            **embedding_arguments(position, hidden_dim),
        )
        embedding_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="embedding_dropout"
        )
        decoder_layers = [
            TransformerDecoder(
                intermediate_dim=intermediate_dim,
                num_heads=num_heads,
                dropout=dropout,
                normalize_first=normalize_first,
                position=attention_position(position),
                dtype=dtype,
                name=f"decoder_layer_{index}",
            )
            for index in range(num_layers)
        ]
        final_norm = (
            keras.layers.LayerNormalization(
                epsilon=1e-5, dtype=dtype, name="final_norm"
            )
            if normalize_first
            else None
        )
        logits_dense = keras.layers.Dense(vocabulary_size, dtype=dtype, name="logits")

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = ops.not_equal(token_ids, 0)
        x = embedding_dropout(embedding(token_ids))
        for layer in decoder_layers:
            x = layer(x, decoder_padding_mask=padding_mask)
        if final_norm is not None:
            x = final_norm(x)
        logits = logits_dense(x)
        super().__init__(inputs=token_ids, outputs=logits, dtype=dtype, **kwargs)

        self.embedding = embedding
        self.embedding_dropout = embedding_dropout
        self.decoder_layers = decoder_layers
        self.final_norm = final_norm
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

    def call(self, inputs, training=None, mask=None):
        check_token_ids(inputs)
        return super().call(inputs, training=training, mask=mask)

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
        # In the cache every slot up to the query is a real token (later
        # slots are hidden by the causal mask), so no padding mask is used.
        no_padding = ops.ones(ops.shape(token_ids), dtype="bool")
        caches = []
        for index, layer in enumerate(self.decoder_layers):
            x, layer_cache = layer(
                x,
                decoder_padding_mask=no_padding,
                self_attention_cache=cache[:, index],
                self_attention_cache_update_index=cache_update_index,
                training=False,
            )
            caches.append(layer_cache)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.logits_dense(x), x, ops.stack(caches, axis=1)

    def build_cache(self, token_ids):
        """`(hidden_states, cache)` after one cached pass over `token_ids`."""
        batch_size, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        head_dim = self.hidden_dim // self.num_heads
        shape = (batch_size, self.num_layers, 2, length, self.num_heads, head_dim)
        cache = ops.zeros(shape, dtype=self.compute_dtype)
        _, hidden_states, cache = self.call_with_cache(token_ids, cache, 0)
        return hidden_states, cache

    def generate(
        self,
        prompt_ids,
        max_length=None,
        sampler="greedy",
        stop_token_id=None,
        use_cache=True,
    ):
        """Continues right-padded prompts with a keras-hub sampler.

        Generation starts at the end of the shortest prompt; longer prompts
        keep their own tokens until they end. keras-hub is needed here only.

        Args:
            prompt_ids: int array, tensor or list of lists `(batch, length)`
                of prompts right-padded with 0.
            max_length: int. Length of the output, prompt included; at most
                the model's `max_length`, its default.
            sampler: `"greedy"`, `"top_k"`, `"top_p"`, `"beam"` or a
                `keras_hub.samplers.Sampler` instance. Names take keras-hub's
                defaults (`top_k`: k=5; `top_p`: p=0.1, nearly greedy;
                `beam`: 5 beams); pass e.g. `TopPSampler(p=0.9)` for others.
                Defaults to `"greedy"`.
            stop_token_id: int or None. Generation stops once every sequence
                has produced it; later ids are set to 0.
            use_cache: bool. Decode with the key/value cache (one token per
                step) if True, else rerun the whole model at each step (the
                slow reference). Defaults to `True`.

        Returns:
            Numpy int32 array `(batch, max_length)`: prompts and continuations.
        """
        max_length = check_generate_arguments(
            max_length, self.max_length, stop_token_id, use_cache
        )
        if stop_token_id is not None and stop_token_id >= self.vocabulary_size:
            raise ValueError(
                f"`stop_token_id` must be below vocabulary_size="
                f"{self.vocabulary_size}. Received: stop_token_id={stop_token_id}"
            )
        get_sampler(sampler)
        prompt, lengths = right_padded_ids(
            "prompt_ids", prompt_ids, self.vocabulary_size
        )
        if lengths.max() > max_length:
            raise ValueError(
                f"`prompt_ids` holds a prompt of {lengths.max()} tokens, longer "
                f"than max_length={max_length}."
            )
        prompt = pad_to(prompt[:, : lengths.max()], max_length)
        output = self.generate_step(
            ops.convert_to_tensor(prompt, dtype="int32"),
            sampler=sampler,
            stop_token_id=stop_token_id,
            use_cache=use_cache,
        )
        return np.asarray(ops.convert_to_numpy(output)).astype("int32")

    def generate_step(
        self, token_ids, sampler="greedy", stop_token_id=None, use_cache=True
    ):
        """Tensor-only core of `generate()`, also traced into serving graphs.

        Unlike `generate()`, it checks nothing and takes the prompts already
        padded to the output length, so that it runs inside a `tf.function`.

        Args:
            token_ids: int tensor `(batch, max_length)`: prompts of at least
                one id, right-padded with 0 up to the output length (at most
                the model's `max_length`).
            sampler: `"greedy"`, `"top_k"`, `"top_p"`, `"beam"` or a
                `keras_hub.samplers.Sampler` instance. Names take keras-hub's
                defaults (`top_k`: k=5; `top_p`: p=0.1, nearly greedy;
                `beam`: 5 beams); pass e.g. `TopPSampler(p=0.9)` for others.
                Defaults to `"greedy"`.
            stop_token_id: int or None. Generation stops once every sequence
                has produced it; later ids are set to 0.
            use_cache: bool. Decode with the key/value cache if True.
                Defaults to `True`.

        Returns:
            Int32 tensor `(batch, max_length)`: prompts and continuations.
        """
        sampler = get_sampler(sampler)
        token_ids = ops.cast(token_ids, "int32")
        prompt_mask = ops.not_equal(token_ids, 0)
        # Generation starts after the shortest prompt; the sampler leaves the
        # longer prompts' own ids in place.
        index = ops.min(ops.sum(ops.cast(prompt_mask, "int32"), axis=1))

        if use_cache:
            hidden_states, cache = self.build_cache(token_ids)

            def next(prompt, cache, index):
                batch_size = ops.shape(prompt)[0]
                token = ops.slice(prompt, [0, index - 1], [batch_size, 1])
                logits, hidden_states, cache = self.call_with_cache(
                    token, cache, index - 1
                )
                return (
                    suppress_padding(ops.squeeze(logits, axis=1)),
                    ops.squeeze(hidden_states, axis=1),
                    cache,
                )

        else:
            hidden_states, cache = None, None

            def next(prompt, cache, index):
                logits = self(prompt, training=False)
                batch_size = ops.shape(prompt)[0]
                logits = ops.slice(
                    logits, [0, index - 1, 0], [batch_size, 1, self.vocabulary_size]
                )
                return suppress_padding(ops.squeeze(logits, axis=1)), None, cache

        output = sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=index,
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

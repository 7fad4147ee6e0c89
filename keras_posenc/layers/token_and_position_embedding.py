import keras
from keras import ops

from keras_posenc.layers.learned_position_embedding import LearnedPositionEmbedding
from keras_posenc.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from keras_posenc.utils.validation import check_one_of
from keras_posenc.utils.validation import check_positive_int

POSITION_TYPES = ("sinusoidal", "learned", "none")


@keras.saving.register_keras_serializable(package="keras_posenc")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding followed by an absolute position encoding.

    Looks token ids up in a `(vocabulary_size, embedding_dim)` table, then adds
    or concatenates a sinusoidal or learned position encoding. With
    `position="none"` (NoPE) it is a plain token embedding, for models whose
    attention carries the positions (rotary, ALiBi, T5, Shaw).

    Args:
        vocabulary_size: int. Number of token ids.
        max_length: int. Rows of the learned position table. The sinusoidal
            encoding has no table and accepts any position.
        embedding_dim: int. Width of the token embedding.
        position: `"sinusoidal"`, `"learned"` or `"none"`. Defaults to
            `"sinusoidal"`.
        merge: `"add"` or `"concat"`. Defaults to `"add"`.
        position_dim: int or None. Width of the position encoding with
            `merge="concat"`; defaults to `embedding_dim`. Must be None or
            `embedding_dim` with `"add"`.
        mask_zero: bool. Whether id 0 is padding; if True the layer returns a
            Keras mask `ids != 0`. Defaults to `False`.
        max_wavelength: float. Longest wavelength of the sinusoidal encoding.
            Defaults to `10000.0`.
        embeddings_initializer: initializer of the token and learned position
            tables. Defaults to `"glorot_uniform"`.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: integer tensor of shape `(batch_size, sequence_length)`.
        start_index: int or scalar integer tensor. Position of the first token.
            Defaults to `0`.
        positions: optional integer tensor `(sequence_length,)` or
            `(batch_size, sequence_length)`, overriding `start_index`.

    Returns:
        A float tensor of shape `(batch_size, sequence_length, output_dim)`
        with `output_dim = embedding_dim (+ position_dim for "concat")`.

    Input checks: token ids must be integers of rank 2 (a `TypeError` for
    float ids, a `ValueError` for another rank, also on a `keras.Input`).
    The position arguments are checked by the position layer (see
    `SinusoidalPositionEncoding` and `LearnedPositionEmbedding`).

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> ids = np.array([[5, 3, 9, 0, 0]])
    >>> layer = keras_posenc.layers.TokenAndPositionEmbedding(
    ...     vocabulary_size=10, max_length=8, embedding_dim=4,
    ...     position="learned", merge="concat", position_dim=2, mask_zero=True)
    >>> tuple(layer(ids).shape)
    (1, 5, 6)
    >>> keras_posenc.utils.to_numpy(layer.compute_mask(ids)).tolist()
    [[True, True, True, False, False]]

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), section 3.4-3.5.
    """

    def __init__(
        self,
        vocabulary_size,
        max_length,
        embedding_dim,
        position="sinusoidal",
        merge="add",
        position_dim=None,
        mask_zero=False,
        max_wavelength=10000.0,
        embeddings_initializer="glorot_uniform",
        **kwargs,
    ):
        check_positive_int("vocabulary_size", vocabulary_size)
        check_positive_int("max_length", max_length)
        check_positive_int("embedding_dim", embedding_dim)
        check_one_of("position", position, POSITION_TYPES)
        check_one_of("merge", merge, ("add", "concat"))
        check_positive_int("position_dim", position_dim, allow_none=True)
        if merge == "add" and position_dim not in (None, embedding_dim):
            raise ValueError(
                'With merge="add", `position_dim` must be None or equal to '
                f"`embedding_dim` ({embedding_dim}). Received: "
                f"position_dim={position_dim}"
            )
        if not isinstance(mask_zero, bool):
            raise ValueError(
                f"`mask_zero` must be a bool. Received: mask_zero={mask_zero!r}"
            )
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.max_length = int(max_length)
        self.embedding_dim = int(embedding_dim)
        self.position = position
        self.merge = merge
        self.position_dim = position_dim
        self.mask_zero = mask_zero
        self.max_wavelength = max_wavelength
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = mask_zero

        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            embedding_dim,
            embeddings_initializer=self._clone_initializer(),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        if position == "sinusoidal":
            self.position_embedding = SinusoidalPositionEncoding(
                max_wavelength=max_wavelength,
                merge=merge,
                output_dim=position_dim,
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        elif position == "learned":
            self.position_embedding = LearnedPositionEmbedding(
                max_length=max_length,
                merge=merge,
                output_dim=position_dim,
                embeddings_initializer=self._clone_initializer(),
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        else:
            self.position_embedding = None

    def _clone_initializer(self):
        return self.embeddings_initializer.__class__.from_config(
            self.embeddings_initializer.get_config()
        )

    @property
    def output_dim(self):
        if self.position != "none" and self.merge == "concat":
            return self.embedding_dim + (self.position_dim or self.embedding_dim)
        return self.embedding_dim

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(
                "TokenAndPositionEmbedding expects token ids of shape "
                f"(batch_size, sequence_length). Received: inputs.shape={input_shape}"
            )
        self.token_embedding.build(input_shape)
        if self.position_embedding is not None:
            self.position_embedding.build(input_shape + (self.embedding_dim,))

    def _check_dtype(self, inputs):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if "int" not in dtype:
            raise TypeError(
                "TokenAndPositionEmbedding expects integer token ids. "
                f"Received: inputs.dtype={dtype}"
            )

    def compute_output_spec(self, inputs, *args, **kwargs):
        # Symbolic calls use `compute_output_shape` and skip `call`: check here.
        self._check_dtype(inputs)
        return super().compute_output_spec(inputs, *args, **kwargs)

    def call(self, inputs, start_index=0, positions=None):
        self._check_dtype(inputs)
        embeddings = self.token_embedding(inputs)
        if self.position_embedding is None:
            return embeddings
        return self.position_embedding(
            embeddings, start_index=start_index, positions=positions
        )

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_length": self.max_length,
                "embedding_dim": self.embedding_dim,
                "position": self.position,
                "merge": self.merge,
                "position_dim": self.position_dim,
                "mask_zero": self.mask_zero,
                "max_wavelength": self.max_wavelength,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config

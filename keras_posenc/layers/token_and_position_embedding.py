import keras
from keras import ops

from keras_posenc import positions as position_schemes
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_layer_keyword_arguments
from keras_posenc.utils.validation import check_one_of
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import clone_initializer


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
        position: `"sinusoidal"`, `"learned"`, `"sinusoidal_concat"`,
            `"learned_concat"`, `"none"`, a config, or an absolute position
            layer (`SinusoidalPositionEncoding`, `LearnedPositionEmbedding`
            with `merge="add"` or `"concat"`), used as it is. Defaults to
            `"sinusoidal"`.
        merge: `"add"`, `"concat"` or None. None means `"add"` for a name
            (`"concat"` for a `_concat` name) and the layer's own for a
            layer; a value that contradicts either raises.
        position_dim: int or None. Width of the position encoding with
            `merge="concat"`; defaults to `embedding_dim` (to the layer's own
            `output_dim` for a layer). Must be None or `embedding_dim` with
            `"add"`.
        mask_zero: bool. Whether id 0 is padding; if True the layer returns a
            Keras mask `ids != 0`. Defaults to `False`.
        max_wavelength: float or None. Longest wavelength of a sinusoidal
            encoding given by name; None means `10000.0`. Must be None with a
            layer (it has its own).
        embeddings_initializer: initializer of the token and learned position
            tables. Defaults to `"glorot_uniform"`.
        tie_weights: bool. As in keras-hub: the token table is a
            `keras.layers.ReversibleEmbedding`, and
            `layer.token_embedding(hidden_states, reverse=True)` computes
            logits with the token table itself (True) or with a separate
            output table (False). Defaults to `True`.
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
        max_length=None,
        embedding_dim=None,
        position="sinusoidal",
        merge=None,
        position_dim=None,
        mask_zero=False,
        max_wavelength=None,
        embeddings_initializer="glorot_uniform",
        tie_weights=True,
        **kwargs,
    ):
        # First, so keras-hub's `sequence_length=` is named, not a missing
        # `max_length`.
        check_layer_keyword_arguments(self, kwargs)
        check_positive_int("vocabulary_size", vocabulary_size)
        check_positive_int("max_length", max_length)
        check_positive_int("embedding_dim", embedding_dim)
        check_one_of("merge", merge, ("add", "concat", None))
        check_positive_int("position_dim", position_dim, allow_none=True)
        check_bool("mask_zero", mask_zero)
        check_bool("tie_weights", tie_weights)
        super().__init__(**kwargs)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        position_layer = self._position_layer(
            position, merge, position_dim, max_wavelength, max_length
        )
        if position_layer is not None:
            merge, position_dim = position_layer.merge, position_layer.output_dim
        merge = merge or "add"
        if merge == "add" and position_dim not in (None, embedding_dim):
            raise ValueError(
                'With merge="add", `position_dim` must be None or equal to '
                f"`embedding_dim` ({embedding_dim}). Received: "
                f"position_dim={position_dim}"
            )
        self.vocabulary_size = int(vocabulary_size)
        self.max_length = int(max_length)
        self.embedding_dim = int(embedding_dim)
        # A name stays a name in the config; a layer or config is serialized.
        self.position = position if isinstance(position, str) else None
        self.merge = merge
        self.position_dim = position_dim
        self.mask_zero = mask_zero
        self.max_wavelength = max_wavelength
        self.supports_masking = mask_zero

        self.tie_weights = tie_weights
        # keras-hub's layout: `token_embedding(hidden, reverse=True)` gives
        # logits over the vocabulary (with the token table itself when tied).
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size,
            embedding_dim,
            tie_weights=tie_weights,
            embeddings_initializer=clone_initializer(self.embeddings_initializer),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.position_embedding = position_layer

    def _position_layer(
        self, position, merge, position_dim, max_wavelength, max_length
    ):
        """The absolute position layer for `position`, or None for `"none"`."""
        if isinstance(position, str) and position in position_schemes.ABSOLUTE_NAMES:
            kind, _, name_merge = position.partition("_")
            if name_merge and merge not in (None, name_merge):
                raise ValueError(
                    f"`merge` contradicts position={position!r}. Received: "
                    f"merge={merge!r}"
                )
            config = {"merge": merge or name_merge or "add", "output_dim": position_dim}
            if kind == "sinusoidal":
                config["max_wavelength"] = (
                    10000.0 if max_wavelength is None else max_wavelength
                )
            else:
                config["embeddings_initializer"] = clone_initializer(
                    self.embeddings_initializer
                )
            return position_schemes.get(
                {"class_name": position, "config": config},
                max_length=max_length,
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        layer = position_schemes.get_absolute(position, max_length=max_length)
        if layer is None:
            return None
        for name, value, own in (
            ("merge", merge, layer.merge),
            ("position_dim", position_dim, layer.output_dim),
        ):
            if value is not None and value != own:
                raise ValueError(
                    f"`{name}` contradicts the position layer's own ({own!r}); "
                    f"leave it None with a layer. Received: {name}={value!r}"
                )
        if max_wavelength is not None:
            raise ValueError(
                "`max_wavelength` belongs to the position layer; leave it None "
                f"with a layer. Received: max_wavelength={max_wavelength!r}"
            )
        return layer

    @property
    def output_dim(self):
        if self.position_embedding is not None and self.merge == "concat":
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
        mask = self.compute_mask(inputs) if positions is not None else None
        return self.position_embedding(
            embeddings, start_index=start_index, positions=positions, mask=mask
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
                "position": self.position
                or position_schemes.serialize(self.position_embedding),
                "merge": self.merge,
                "position_dim": self.position_dim,
                "mask_zero": self.mask_zero,
                "tie_weights": self.tie_weights,
                "max_wavelength": self.max_wavelength,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config

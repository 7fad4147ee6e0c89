import numbers

import keras
import numpy as np
from keras import ops

from keras_posenc.layers.absolute_position_layer import AbsolutePositionLayer
from keras_posenc.utils.positions import check_start_index
from keras_posenc.utils.positions import concrete_value
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_positive_int


def interpolate_position_table(table, max_length):
    """Stretches a `(length, width)` position table to `max_length` rows.

    Row `p` of the result is the linear interpolation of the trained table at
    fractional position `p * (length - 1) / (max_length - 1)`, so the first
    and last trained rows are kept and the positions in between are
    spread evenly (the "position interpolation" of ViT and Chen et al. 2023).

    Args:
        table: array of shape `(length, width)`.
        max_length: int. Number of rows of the result, `>= length`.

    Returns:
        A numpy array of shape `(max_length, width)` in the dtype of `table`.
    """
    table = np.asarray(table)
    if table.ndim != 2:
        raise ValueError(
            "`table` must have shape (length, width). "
            f"Received: table.shape={table.shape}"
        )
    length = table.shape[0]
    check_positive_int("max_length", max_length)
    if max_length < length:
        raise ValueError(
            f"`max_length` must be at least the current table length {length}. "
            f"Received: max_length={max_length}"
        )
    if length == 1 or max_length == length:
        return np.repeat(table, max_length // length, axis=0).astype(table.dtype)
    source = np.linspace(0.0, length - 1.0, max_length)
    lower = np.floor(source).astype("int64")
    upper = np.minimum(lower + 1, length - 1)
    weight = (source - lower)[:, None]
    table64 = table.astype("float64")
    result = table64[lower] * (1.0 - weight) + table64[upper] * weight
    return result.astype(table.dtype)


@keras.saving.register_keras_serializable(package="keras_posenc")
class LearnedPositionEmbedding(AbsolutePositionLayer):
    """Trainable absolute position embedding: one learned vector per position.

    As in BERT and GPT-2 (and the "learned" variant of Vaswani et al., 2017),
    position `p` is encoded by row `p` of a `(max_length, width)` table.
    `inputs` may have rank 3 or more, with the sequence on axis -2 (e.g.
    `(batch, frames, patches, dim)`): every middle axis gets the same rows.
    With `merge=None` the layer computes what
    `keras_hub.layers.PositionEmbedding(sequence_length=max_length)` computes
    for the same table (a `(max_length, width)` weight named `embeddings`),
    for inputs of any rank >= 3; the constructor arguments differ
    (`max_length`, `embeddings_initializer`).

    A sequence must fit the table. When the sequence length is known when the
    layer is called and `start_index` is a Python int, a sequence with
    `start_index + sequence_length > max_length` raises a `ValueError`. Under
    a dynamic shape (unknown length, a `start_index` tensor, or explicit
    `positions`) nothing can be raised inside a compiled graph, so positions
    outside `[0, max_length)` produce NaN embeddings on every backend: the
    loss turns NaN instead of the model silently reusing the last row.
    Explicit `positions` whose values are known (eager calls) are checked:
    one outside the table raises a `ValueError`. Under a Keras mask (or the
    `mask_zero` padding mask of `TokenAndPositionEmbedding`) the padding
    slots take row 0 whatever their position, so the `cumsum(mask) - 1`
    numbering of left padding (-1 at the pads) never reaches the valid tokens
    as NaN through attention. (JAX
    and PyTorch trace models with the real length even for
    `keras.Input(shape=(None, d))`, so they raise; a TensorFlow graph traced
    with an unknown length gives the NaNs.)
    To go beyond the trained length, use `grow()`.

    Args:
        max_length: int. Number of positions in the table.
        merge: `"add"`, `"concat"` or `None`, as in
            `keras_posenc.layers.SinusoidalPositionEncoding`. Defaults to `"add"`.
        output_dim: int or None. Width of the table for `"concat"` and
            `None`; defaults to the width of `inputs`.
        embeddings_initializer: initializer of the table. Defaults to
            `"glorot_uniform"`.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor of shape `(batch_size, sequence_length,
            feature_dim)`, or `(batch_size, ..., sequence_length, feature_dim)`:
            any rank >= 3, the sequence on axis -2.
        start_index: int or scalar integer tensor. Position of the first
            element of `inputs`. Defaults to `0`.
        positions: optional integer tensor of shape `(sequence_length,)` or
            `(batch_size, sequence_length)`, overriding `start_index`. Its
            batch axis is axis 0 of `inputs`, whatever the rank.

    Returns:
        A tensor of shape `inputs.shape[:-1] + (width,)`: `feature_dim` wide
        for `"add"`, `feature_dim + output_dim` for `"concat"`, `output_dim`
        for `None`. A Keras mask on `inputs` is passed through.

    Input checks: `inputs` of rank below 3, an unknown feature dimension or
    a non-float dtype raise when the layer is built or called. `positions`
    must be integers (a `TypeError` otherwise) of shape `(sequence_length,)`
    or `(batch_size, sequence_length)`, checked against the static axes only.
    Values inside tensors (`positions`, a `start_index` tensor) are unknown
    while tracing: out of the table they give NaN, as above.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> embeddings = np.zeros((2, 10, 16), dtype="float32")
    >>> layer = keras_posenc.layers.LearnedPositionEmbedding(max_length=32)
    >>> tuple(layer(embeddings).shape)
    (2, 10, 16)
    >>> patches = np.zeros((2, 3, 10, 16), dtype="float32")  # (batch, frames, seq, dim)
    >>> tuple(layer(patches).shape)
    (2, 3, 10, 16)
    >>> longer = layer.grow(64)
    >>> longer.max_length
    64

    References:
        - [Gehring et al., 2017](https://arxiv.org/abs/1705.03122) (learned
          position embeddings), [Devlin et al., 2019](https://arxiv.org/abs/1810.04805).
    """

    def __init__(
        self,
        max_length,
        merge="add",
        output_dim=None,
        embeddings_initializer="glorot_uniform",
        **kwargs,
    ):
        check_positive_int("max_length", max_length)
        super().__init__(merge=merge, output_dim=output_dim, **kwargs)
        self.max_length = int(max_length)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_length, self.encoding_dim),
            initializer=self.embeddings_initializer,
            trainable=True,
        )

    def encode(self, sequence_length, start_index, positions):
        table = ops.cast(self.embeddings, self.compute_dtype)
        check_start_index(start_index)
        if (
            positions is None
            and isinstance(sequence_length, numbers.Integral)
            and isinstance(start_index, numbers.Integral)
        ):
            if start_index + sequence_length > self.max_length:
                raise ValueError(
                    f"The sequence does not fit the position table: start_index "
                    f"({start_index}) + sequence length ({sequence_length}) = "
                    f"{start_index + sequence_length} > max_length "
                    f"({self.max_length}). Grow the table with `grow()` or use "
                    "a larger `max_length`."
                )
            return ops.slice(
                table, (start_index, 0), (sequence_length, self.encoding_dim)
            )
        ids = position_ids(sequence_length, start_index, positions, dtype="int32")
        values = concrete_value(positions)
        if (
            values is not None
            and values.size
            and (values.min() < 0 or values.max() >= self.max_length)
        ):
            raise ValueError(
                f"`positions` must lie in [0, max_length) = [0, {self.max_length}) "
                "for the tokens that count (padding slots under a mask may hold "
                f"any value). Received: positions from {values.min()} to "
                f"{values.max()}. Grow the table with `grow()` or use a larger "
                "`max_length`."
            )
        inside = ops.logical_and(ids >= 0, ids < self.max_length)
        rows = ops.take(table, ops.clip(ids, 0, self.max_length - 1), axis=0)
        nan = ops.convert_to_tensor(float("nan"), dtype=self.compute_dtype)
        return ops.where(ops.expand_dims(inside, -1), rows, nan)

    def grow(self, max_length):
        """Returns a copy of this built layer with a table of `max_length` rows.

        The trained rows are stretched by linear interpolation
        (`keras_posenc.layers.interpolate_position_table`). Fine-tune briefly
        afterwards: positions keep their order but not their exact vectors.
        """
        if not self.built:
            raise ValueError(
                "`grow()` needs a built layer with trained weights. Call the layer "
                "on inputs first."
            )
        config = self.get_config()
        config["max_length"] = max_length
        grown = self.__class__.from_config(config)
        grown.build((None, None, self.input_dim))
        grown.embeddings.assign(
            interpolate_position_table(
                ops.convert_to_numpy(self.embeddings), max_length
            )
        )
        return grown

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config

import numbers

import keras
import numpy as np
from keras import ops

from keras_posenc.layers.absolute_position_layer import AbsolutePositionLayer
from keras_posenc.utils.positions import check_start_index
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_positive_float


def sinusoidal_inverse_frequencies(width, max_wavelength):
    """`max_wavelength ** (-2i / width)` for `i < ceil(width / 2)`, in float64."""
    exponents = 2.0 * np.arange((width + 1) // 2, dtype="float64") / width
    return np.power(float(max_wavelength), -exponents)


# Positions kept in the numpy table of a static range (4 MiB at width 256).
CACHED_POSITIONS = 4096


@keras.saving.register_keras_serializable(package="keras_posenc")
class SinusoidalPositionEncoding(AbsolutePositionLayer):
    """Fixed sine/cosine position encoding (Vaswani et al., 2017).

    `PE[p, 2i] = sin(p / max_wavelength^(2i/d))` and
    `PE[p, 2i+1] = cos(p / max_wavelength^(2i/d))`, for a width `d` that may be
    odd (the last feature is then a sine). Frequencies are computed in float64
    once, angles in float32, and the result is cast once to the compute dtype,
    so a `mixed_bfloat16` model still tells position 5,000 from 5,001.

    The layer has no weights and works for any position, including beyond
    the lengths seen in training. `inputs` may have rank 3 or more, with the
    sequence on axis -2 (e.g. `(batch, heads, seq, dim)` or
    `(batch, frames, patches, dim)`): every middle axis gets the same `PE`.

    Args:
        max_wavelength: float. The longest wavelength, `10000` in the paper.
            Defaults to `10000.0`.
        merge: `"add"`, `"concat"` or `None`. `"add"` returns `inputs + PE`;
            `"concat"` returns `inputs` with `PE` appended on the last axis;
            `None` returns `PE` alone, broadcast to `inputs.shape[:-1] +
            (output_dim,)` (a drop-in for `keras_hub.layers.SinePositionEncoding`,
            for inputs of any rank >= 3). Defaults to `"add"`.
        output_dim: int or None. Width of `PE` for `"concat"` and `None`;
            defaults to the width of `inputs`.
        **kwargs: other keyword arguments of `keras.layers.Layer`
            (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(batch_size, sequence_length,
            feature_dim)`, or `(batch_size, ..., sequence_length, feature_dim)`:
            any rank >= 3, the sequence on axis -2.
        start_index: int or scalar integer tensor. Position of the first
            element of `inputs`, e.g. the cache index while decoding.
            Defaults to `0`.
        positions: optional integer (or float) tensor of shape
            `(sequence_length,)` or `(batch_size, sequence_length)`,
            overriding `start_index` (packed or left-padded sequences). Its
            batch axis is axis 0 of `inputs`, whatever the rank.

    Returns:
        A tensor of shape `inputs.shape[:-1] + (width,)`, where `width` is
        `feature_dim` for `"add"`, `feature_dim + output_dim` for `"concat"`,
        `output_dim` for `None`. A Keras mask on `inputs` is passed through.

    Input checks: `inputs` of rank below 3, an unknown feature dimension or
    a non-float dtype raise when the layer is built or called (on a
    `keras.Input` too). `positions` may be fractional (the encoding is a
    continuous function of the position); its shape is checked against the
    static sequence length and batch size only, so an axis unknown while
    tracing cannot be checked. A negative Python `start_index` raises; the
    value of a `start_index` tensor is not known while tracing and is not
    checked.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> embeddings = np.zeros((2, 10, 16), dtype="float32")
    >>> layer = keras_posenc.layers.SinusoidalPositionEncoding()
    >>> tuple(layer(embeddings).shape)
    (2, 10, 16)
    >>> layer = keras_posenc.layers.SinusoidalPositionEncoding(
    ...     merge="concat", output_dim=8)
    >>> tuple(layer(embeddings, start_index=5).shape)
    (2, 10, 24)
    >>> heads = np.zeros((2, 4, 10, 16), dtype="float32")  # (batch, heads, seq, dim)
    >>> layer = keras_posenc.layers.SinusoidalPositionEncoding(merge=None)
    >>> tuple(layer(heads).shape)
    (2, 4, 10, 16)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), section 3.5.
    """

    integer_positions = False

    def __init__(self, max_wavelength=10000.0, merge="add", output_dim=None, **kwargs):
        check_positive_float("max_wavelength", max_wavelength)
        super().__init__(merge=merge, output_dim=output_dim, **kwargs)
        self.max_wavelength = float(max_wavelength)

    def build(self, input_shape):
        super().build(input_shape)
        self.inverse_frequencies = sinusoidal_inverse_frequencies(
            self.encoding_dim, self.max_wavelength
        ).astype("float32")
        self._constant_table = None

    def encode(self, sequence_length, start_index, positions):
        if (
            positions is None
            and isinstance(sequence_length, numbers.Integral)
            and isinstance(start_index, numbers.Integral)
        ):
            # A static range: a constant, so that no backend recomputes the
            # sines at every call (XLA on CPU does not fold them away).
            check_start_index(start_index)
            encoding = self.constant_encoding(start_index, sequence_length)
            return ops.convert_to_tensor(encoding, dtype=self.compute_dtype)
        positions = position_ids(
            sequence_length, start_index, positions, dtype="float32"
        )
        # (..., seq, ceil(width / 2)), in float32 whatever the compute dtype.
        angles = ops.expand_dims(positions, -1) * ops.convert_to_tensor(
            self.inverse_frequencies, dtype="float32"
        )
        # Interleave sin and cos: (..., seq, ceil(width / 2), 2) -> (..., seq, width).
        encoding = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
        encoding = ops.reshape(
            encoding, tuple(ops.shape(angles)[:-1]) + (2 * angles.shape[-1],)
        )
        if self.encoding_dim % 2:
            encoding = encoding[..., : self.encoding_dim]
        return ops.cast(encoding, self.compute_dtype)

    def constant_encoding(self, start_index, sequence_length):
        """Numpy `(sequence_length, encoding_dim)` encoding of a static range.

        The same float32 arithmetic as the traced path (angles in float32,
        interleaved sine and cosine). Rows up to `CACHED_POSITIONS` are kept
        in a table that grows by doubling, so eager calls (PyTorch, cached
        decoding one position at a time) do not recompute them.
        """
        end = start_index + sequence_length
        if end > CACHED_POSITIONS:
            return self._sinusoids(start_index, end)
        table = self._constant_table
        if table is None or len(table) < end:
            size = min(
                max(end, 2 * (0 if table is None else len(table))), CACHED_POSITIONS
            )
            table = self._constant_table = self._sinusoids(0, size)
        return table[start_index:end]

    def _sinusoids(self, start, end):
        positions = np.arange(start, end, dtype="float32")
        angles = positions[:, None] * self.inverse_frequencies[None, :]
        encoding = np.stack([np.sin(angles), np.cos(angles)], axis=-1)
        encoding = encoding.reshape(end - start, 2 * angles.shape[-1])
        return encoding[:, : self.encoding_dim]

    def get_config(self):
        config = super().get_config()
        config["max_wavelength"] = self.max_wavelength
        return config

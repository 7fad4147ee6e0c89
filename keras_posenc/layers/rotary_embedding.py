import math

import keras
import numpy as np
from keras import ops

from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.layers.sinusoidal_position_encoding import (
    sinusoidal_inverse_frequencies,
)
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_one_of
from keras_posenc.utils.validation import check_positive_float
from keras_posenc.utils.validation import check_positive_int

LAYOUTS = ("half", "interleaved")
SCALINGS = (None, "linear", "dynamic_ntk", "yarn")

# YaRN's correction range (Peng et al. 2023, section 3.2; HF transformers defaults).
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


def rotary_inverse_frequencies(rotary_dim, max_wavelength):
    """`max_wavelength ** (-2i / rotary_dim)` for `i < rotary_dim / 2`, in float64.

    The frequencies of the sinusoidal encoding (Su et al. build RoPE on them).
    """
    return sinusoidal_inverse_frequencies(rotary_dim, max_wavelength)


def yarn_inverse_frequencies(rotary_dim, max_wavelength, factor, original_max_length):
    """YaRN frequencies in float64, as HF transformers' `_compute_yarn_parameters`.

    Dimensions that turn fewer than `beta_slow` times over the original context
    are interpolated (`theta / factor`), those that turn more than `beta_fast`
    times are kept (`theta`), with a linear ramp over the dimensions between.
    """
    theta = rotary_inverse_frequencies(rotary_dim, max_wavelength)

    def correction_dim(num_rotations):
        return (
            rotary_dim * math.log(original_max_length / (num_rotations * 2 * math.pi))
        ) / (2 * math.log(max_wavelength))

    low = max(math.floor(correction_dim(YARN_BETA_FAST)), 0)
    high = min(math.ceil(correction_dim(YARN_BETA_SLOW)), rotary_dim - 1)
    if low == high:
        high += 0.001  # Prevent a division by zero, as HF does.
    ramp = np.clip((np.arange(rotary_dim // 2) - low) / (high - low), 0.0, 1.0)
    extrapolation = 1.0 - ramp
    return (theta / factor) * (1.0 - extrapolation) + theta * extrapolation


def yarn_attention_factor(factor):
    """YaRN's `mscale = 0.1 * ln(factor) + 1`, multiplying cos and sin."""
    return 1.0 if factor <= 1.0 else 0.1 * math.log(factor) + 1.0


def rotate_feature_pairs(inputs, cos, sin, layout):
    """Rotates the first `cos.shape[-1]` features of `inputs`, in float32.

    Args:
        inputs: tensor of shape `(batch, seq, ..., feature_dim)`.
        cos, sin: float32 tensors of shape `(seq, d)` or `(batch, seq, d)`,
            `d <= feature_dim` even, in the order of `layout` (as returned by
            `RotaryEmbedding.compute_cos_sin`).
        layout: `"half"` (pairs `(i, i + d/2)`) or `"interleaved"` (pairs
            `(2i, 2i + 1)`).

    Returns:
        A float32 tensor of the shape of `inputs`; features from `d` on are
        passed through unchanged.
    """
    width = cos.shape[-1]
    inputs = ops.cast(inputs, "float32")
    # (seq, d) or (batch, seq, d) -> broadcastable to (batch, seq, ..., d).
    for _ in range(len(inputs.shape) - 3):
        cos, sin = ops.expand_dims(cos, -2), ops.expand_dims(sin, -2)
    partial = width < inputs.shape[-1]
    rotated = inputs[..., :width] if partial else inputs
    if layout == "half":
        first, second = ops.split(rotated, 2, axis=-1)
        turned = ops.concatenate([-second, first], axis=-1)
    else:
        # (..., d) -> (..., d/2, 2): (x_2i, x_2i+1) -> (-x_2i+1, x_2i).
        shape = ops.shape(rotated)
        pairs = ops.reshape(rotated, tuple(shape[:-1]) + (width // 2, 2))
        turned = ops.stack([-pairs[..., 1], pairs[..., 0]], axis=-1)
        turned = ops.reshape(turned, shape)
    outputs = rotated * cos + turned * sin
    if partial:
        outputs = ops.concatenate([outputs, inputs[..., width:]], axis=-1)
    return outputs


@keras.saving.register_keras_serializable(package="keras_posenc")
class RotaryEmbedding(AttentionPosition):
    """Rotary position embedding, RoPE (Su et al., 2021).

    Rotates each pair of features `(x_a, x_b)` of the token at position `p` by
    the angle `p * theta_i`, with `theta_i = max_wavelength ** (-2i / d)` and
    `d = rotary_dim`. Applied to queries and keys, the dot product of a query
    at `p` and a key at `p'` then depends on `p - p'` only. With
    `layout="half"` feature `i` is paired with `i + d/2` (GPT-NeoX, LLaMA, and
    numerically equal to `keras_hub.layers.RotaryEmbedding`); with
    `layout="interleaved"` features `2i` and `2i+1` are paired (the RoFormer
    paper, GPT-J). With `rotary_dim` smaller than the feature dimension, only
    the first `rotary_dim` features are rotated and the rest pass through
    unchanged (GPT-NeoX's partial rotary).

    Frequencies are computed in float64 when the layer is built; angles,
    cos/sin and the rotation run in float32 and the result is cast once to
    the compute dtype, so a `mixed_bfloat16` model still tells position 5,000
    from 5,001.

    Context extension (`scaling`):
    - `"linear"`: position interpolation (Chen et al., 2023), positions are
      divided by `scaling_factor`.
    - `"dynamic_ntk"`: the base grows with the length `L` of the call, as in
      HF transformers' `_compute_dynamic_ntk_parameters`:
      `base' = base * (factor * L / L0 - (factor - 1)) ** (d / (d - 2))`, with
      `L0 = original_max_length` and `L = max(L0, start_index + seq_len)` (or
      `max(positions) + 1`). Because the base depends on the call, under a KV
      cache the keys cached at earlier steps keep the base of their step,
      while a pass over the whole sequence uses the base of its full length
      at every position: once the length passes `L0`, cached decoding differs
      from full decoding (as in HF transformers). Up to `L0` both agree.
    - `"yarn"`: YaRN (Peng et al., 2023), as HF transformers'
      `_compute_yarn_parameters` (`beta_fast=32`, `beta_slow=1`): per
      dimension, a linear ramp between the interpolated (`theta / factor`) and
      the original (`theta`) frequency, and cos and sin multiplied by
      `0.1 * ln(factor) + 1`.

    The layer has no weights.

    Args:
        max_wavelength: float. The base of the frequencies, `10000` in the
            paper. Defaults to `10000.0`.
        rotary_dim: int or None. Number of leading features to rotate; must be
            even and at most the feature dimension. Defaults to `None`, all
            features (the feature dimension must then be even).
        layout: `"half"` or `"interleaved"`. Which features form a rotated
            pair: `(i, i + d/2)` or `(2i, 2i + 1)`. Defaults to `"half"`.
        scaling: `None`, `"linear"`, `"dynamic_ntk"` or `"yarn"`. Context
            extension method. Defaults to `None`.
        scaling_factor: float `>= 1`. The context extension factor; must be
            `1.0` when `scaling` is None. Defaults to `1.0`.
        original_max_length: int or None. The context length the model was
            trained with; required by `"dynamic_ntk"` and `"yarn"` when the
            layer is built (a ready model given the layer fills in its own
            `max_length`), ignored otherwise. Defaults to `None`.
        **kwargs: other keyword arguments of `keras.layers.Layer`
            (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(batch_size, sequence_length, ...,
            feature_dim)`, e.g. `(batch_size, sequence_length, num_heads,
            head_dim)` or `(batch_size, sequence_length, feature_dim)`.
        start_index: int or scalar integer tensor. Position of the first
            element of `inputs`, e.g. the cache index while decoding.
            Defaults to `0`.
        positions: optional integer (or float) tensor of shape
            `(sequence_length,)` or `(batch_size, sequence_length)`,
            overriding `start_index` (packed or left-padded sequences).

    Returns:
        A tensor of the shape of `inputs`, in the compute dtype.

    Once built, `compute_cos_sin(positions)` returns the float32 `(cos, sin)`
    of shape `(..., sequence_length, rotary_dim)` for positions of shape
    `(..., sequence_length)`, in the order of `layout` and with YaRN's factor
    applied; `rotate_feature_pairs(inputs, cos, sin, layout)` in this module
    applies them.

    Input checks: a rank below 3, an unknown or odd feature dimension
    (without an even `rotary_dim`) or a non-float dtype raise when the layer
    is built or called. `positions` may be fractional (e.g. divided positions
    for interpolation); its shape is checked against the static axes only. A
    negative Python `start_index` raises; a tensor's value is not checked.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> query = np.random.normal(size=(2, 10, 4, 16)).astype("float32")
    >>> layer = keras_posenc.layers.RotaryEmbedding()
    >>> tuple(layer(query).shape)
    (2, 10, 4, 16)
    >>> layer = keras_posenc.layers.RotaryEmbedding(
    ...     rotary_dim=8, layout="interleaved", scaling="yarn",
    ...     scaling_factor=4.0, original_max_length=2048)
    >>> tuple(layer(query, start_index=3).shape)
    (2, 10, 4, 16)

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864), section 3.4.
        - [Chen et al., 2023](https://arxiv.org/abs/2306.15595) (linear).
        - [Peng et al., 2023](https://arxiv.org/abs/2309.00071) (YaRN).
    """

    def __init__(
        self,
        max_wavelength=10000.0,
        rotary_dim=None,
        layout="half",
        scaling=None,
        scaling_factor=1.0,
        original_max_length=None,
        **kwargs,
    ):
        check_positive_float("max_wavelength", max_wavelength)
        check_positive_int("rotary_dim", rotary_dim, allow_none=True)
        if rotary_dim is not None and rotary_dim % 2:
            raise ValueError(
                f"`rotary_dim` must be even. Received: rotary_dim={rotary_dim}"
            )
        check_one_of("layout", layout, LAYOUTS)
        check_one_of("scaling", scaling, SCALINGS)
        check_positive_float("scaling_factor", scaling_factor)
        if scaling_factor < 1.0:
            raise ValueError(
                "`scaling_factor` must be at least 1. "
                f"Received: scaling_factor={scaling_factor!r}"
            )
        if scaling is None and scaling_factor != 1.0:
            raise ValueError(
                "`scaling_factor` must be 1.0 when `scaling` is None. "
                f"Received: scaling_factor={scaling_factor!r}"
            )
        check_positive_int("original_max_length", original_max_length, allow_none=True)
        if scaling == "yarn" and max_wavelength <= 1.0:
            # YaRN's correction range divides by log(max_wavelength).
            raise ValueError(
                '`max_wavelength` must be greater than 1 with scaling="yarn". '
                f"Received: max_wavelength={max_wavelength!r}"
            )
        super().__init__(**kwargs)
        self.max_wavelength = float(max_wavelength)
        self.rotary_dim = rotary_dim
        self.layout = layout
        self.scaling = scaling
        self.scaling_factor = float(scaling_factor)
        self.original_max_length = original_max_length

    def _resolve_rotary_dim(self, input_shape):
        input_shape = tuple(input_shape)
        name = self.__class__.__name__
        if len(input_shape) < 3 or input_shape[-1] is None:
            raise ValueError(
                f"{name} expects inputs of shape (batch_size, sequence_length, ..., "
                "feature_dim) with a known feature_dim. "
                f"Received: inputs.shape={input_shape}"
            )
        feature_dim = input_shape[-1]
        if self.rotary_dim is None:
            if feature_dim % 2:
                raise ValueError(
                    f"{name} rotates pairs of features, so the feature dimension "
                    f"(the last axis of `inputs`) must be even, or `rotary_dim` "
                    f"set to an even width. Received: feature_dim={feature_dim}"
                )
            return feature_dim
        if self.rotary_dim > feature_dim:
            raise ValueError(
                "`rotary_dim` must be at most the feature dimension (the last "
                f"axis of `inputs`). Received: rotary_dim={self.rotary_dim}, "
                f"feature_dim={feature_dim}"
            )
        return self.rotary_dim

    def check_attention(self, num_heads, key_dim):
        width = self.rotary_dim or key_dim
        if width % 2 or width > key_dim:
            raise ValueError(
                f"{self.__class__.__name__} rotates pairs of features: the head "
                f"size ({key_dim}) must be even, or `rotary_dim` an even width "
                "at most the head size."
            )

    def rotate(self, inputs, positions, is_key=False):
        return self(inputs, positions=positions)

    def build(self, input_shape):
        if self.scaling in ("dynamic_ntk", "yarn") and self.original_max_length is None:
            raise ValueError(
                f'`original_max_length` is required with scaling="{self.scaling}" '
                "(the ready models fill in their `max_length`, as HF transformers "
                "defaults to `max_position_embeddings`). Received: "
                "original_max_length=None"
            )
        self.resolved_rotary_dim = self._resolve_rotary_dim(input_shape)
        width = self.resolved_rotary_dim
        if self.scaling == "yarn":
            inverse_frequencies = yarn_inverse_frequencies(
                width,
                self.max_wavelength,
                self.scaling_factor,
                self.original_max_length,
            )
        else:
            inverse_frequencies = rotary_inverse_frequencies(width, self.max_wavelength)
        self.inverse_frequencies = inverse_frequencies.astype("float32")
        # Dynamic NTK: base' ** (-2i/d) = theta_i * s ** (-2i / (d - 2)) with
        # s = factor * L / L0 - (factor - 1); for d = 2 the only theta is 1.
        ntk_exponents = np.arange(0, width, 2, dtype="float64") / max(width - 2, 1)
        self.ntk_exponents = ntk_exponents.astype("float32")

    def compute_cos_sin(self, positions):
        positions = ops.cast(positions, "float32")
        inverse_frequencies = ops.convert_to_tensor(self.inverse_frequencies, "float32")
        if self.scaling == "linear":
            positions = positions / self.scaling_factor
        elif self.scaling == "dynamic_ntk":
            # The length of the call, as HF's `max(position_ids) + 1`.
            length = ops.maximum(
                ops.max(positions) + 1.0, float(self.original_max_length)
            )
            growth = self.scaling_factor * length / self.original_max_length - (
                self.scaling_factor - 1.0
            )
            inverse_frequencies = inverse_frequencies * ops.exp(
                -ops.log(growth) * ops.convert_to_tensor(self.ntk_exponents, "float32")
            )
        # (..., seq, rotary_dim / 2)
        angles = ops.expand_dims(positions, -1) * inverse_frequencies
        if self.layout == "half":
            angles = ops.concatenate([angles, angles], axis=-1)
        else:
            # (..., seq, d/2) -> (..., seq, d): each angle twice in a row.
            angles = ops.repeat(angles, 2, axis=-1)
        cos, sin = ops.cos(angles), ops.sin(angles)
        if self.scaling == "yarn":
            attention_factor = yarn_attention_factor(self.scaling_factor)
            cos, sin = cos * attention_factor, sin * attention_factor
        return cos, sin

    def call(self, inputs, start_index=0, positions=None):
        check_float_tensor(self.__class__.__name__, "inputs", inputs)
        if positions is not None:
            check_positions_shape(
                positions, inputs.shape[1], inputs.shape[0], integer=False
            )
        positions = position_ids(
            ops.shape(inputs)[1], start_index, positions, dtype="float32"
        )
        cos, sin = self.compute_cos_sin(positions)
        outputs = rotate_feature_pairs(inputs, cos, sin, self.layout)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        self._resolve_rotary_dim(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_wavelength": self.max_wavelength,
                "rotary_dim": self.rotary_dim,
                "layout": self.layout,
                "scaling": self.scaling,
                "scaling_factor": self.scaling_factor,
                "original_max_length": self.original_max_length,
            }
        )
        return config

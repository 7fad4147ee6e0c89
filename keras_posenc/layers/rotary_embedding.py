import numbers

import keras
import numpy as np
from keras import ops

from keras_posenc.layers import rope_scaling
from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_one_of
from keras_posenc.utils.validation import check_positive_float
from keras_posenc.utils.validation import check_positive_int

LAYOUTS = ("half", "interleaved")
SCALINGS = (None, "linear", "dynamic_ntk", "ntk", "yarn", "llama3", "longrope")
# The scalings that need the training length `original_max_length`.
NEEDS_ORIGINAL_LENGTH = ("dynamic_ntk", "yarn", "llama3", "longrope")
# Arguments that only one family of scalings reads, with their defaults.
SCALING_ARGUMENTS = {
    "beta_fast": (("yarn",), 32.0),
    "beta_slow": (("yarn",), 1.0),
    "mscale": (("yarn",), None),
    "mscale_all_dim": (("yarn",), None),
    "truncate": (("yarn",), True),
    "attention_factor": (("yarn", "longrope"), None),
    "low_freq_factor": (("llama3",), 1.0),
    "high_freq_factor": (("llama3",), 4.0),
    "short_factor": (("longrope",), None),
    "long_factor": (("longrope",), None),
}


def _check_factor_list(name, factors):
    """LongRoPE's factors: a non-empty list of positive numbers."""
    if not isinstance(factors, (list, tuple)) or not factors:
        raise ValueError(
            f'`{name}` is required with scaling="longrope": a list of '
            f"rotary_dim // 2 positive floats. Received: {name}={factors!r}"
        )
    for factor in factors:
        check_positive_float(name, factor)


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
    - `"ntk"`: static NTK-aware scaling (bloc97, 2023; x-transformers'
      `rotary_base_rescale_factor`, HF's `"ntk"`): the base times
      `factor ** (d / (d - 2))` at every length.
    - `"yarn"`: YaRN (Peng et al., 2023), as HF transformers'
      `_compute_yarn_parameters`, with its full parameter set: per
      dimension, a linear ramp between the interpolated (`theta / factor`) and
      the original (`theta`) frequency over the dimensions that turn between
      `beta_slow` and `beta_fast` times in `L0` (rounded outwards unless
      `truncate=False`), and cos and sin multiplied by `attention_factor`
      (default `0.1 * ln(factor) + 1`, or DeepSeek's ratio
      `mscale(factor, mscale) / mscale(factor, mscale_all_dim)` when both are
      given).
    - `"llama3"`: Llama 3.1's scaling, as HF's `_compute_llama3_parameters`:
      wavelengths below `L0 / high_freq_factor` kept, above
      `L0 / low_freq_factor` divided by `factor`, smoothly between.
    - `"longrope"`: LongRoPE (Ding et al., 2024; Phi-3), as HF's
      `_compute_longrope_parameters`: frequency `i` divided by
      `short_factor[i]`, or by `long_factor[i]` when the call's length
      `L = max(positions) + 1` (`start_index + seq_len` without `positions`)
      exceeds `L0`, as HF switches on `seq_len`; cos and sin multiplied by
      `attention_factor` (default `sqrt(1 + ln factor / ln L0)`). As with
      dynamic NTK, cached decoding past `L0` keeps the short factors in the
      keys cached before.

    `rotary_fraction < 1` is p-RoPE (Barbero et al., 2024): only the highest
    `rotary_fraction` of the frequencies turn, the other pairs pass through
    unrotated; it combines with any scaling.

    The layer has no weights.

    Args:
        max_wavelength: float. The base of the frequencies, `10000` in the
            paper. Defaults to `10000.0`.
        rotary_dim: int or None. Number of leading features to rotate; must be
            even and at most the feature dimension. Defaults to `None`, all
            features (the feature dimension must then be even).
        layout: `"half"` or `"interleaved"`. Which features form a rotated
            pair: `(i, i + d/2)` or `(2i, 2i + 1)`. Defaults to `"half"`.
        scaling: `None`, `"linear"`, `"dynamic_ntk"`, `"ntk"`, `"yarn"`,
            `"llama3"` or `"longrope"`. Context extension method. Defaults
            to `None`.
        scaling_factor: float `>= 1`. The context extension factor; must be
            `1.0` when `scaling` is None. Defaults to `1.0`.
        original_max_length: int or None. The context length the model was
            trained with (`L0`); required by `"dynamic_ntk"`, `"yarn"`,
            `"llama3"` and `"longrope"` when the layer is built (a ready model
            given the layer fills in its own `max_length`), ignored
            otherwise. Defaults to `None`.
        beta_fast, beta_slow: floats. YaRN's correction range, in rotations
            over `L0`. Defaults to `32.0` and `1.0`.
        mscale, mscale_all_dim: floats or None. YaRN's attention factor as
            DeepSeek's ratio of the two `mscale`s (when both are set).
            Default to None.
        truncate: bool. Whether YaRN rounds its correction range to whole
            dimensions. Defaults to `True`.
        attention_factor: float or None. YaRN's and LongRoPE's factor on cos
            and sin; None for their defaults.
        low_freq_factor, high_freq_factor: floats. Llama 3's wavelength
            bounds, `L0 / low_freq_factor` and `L0 / high_freq_factor`.
            Default to `1.0` and `4.0`.
        short_factor, long_factor: lists of `rotary_dim // 2` positive floats.
            LongRoPE's rescale factors; required by `"longrope"`.
        rotary_fraction: float in (0, 1]. The fraction of frequencies that
            turn (p-RoPE). Defaults to `1.0`.
        Arguments of a scaling other than `scaling` must keep their defaults.
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
        beta_fast=32.0,
        beta_slow=1.0,
        mscale=None,
        mscale_all_dim=None,
        truncate=True,
        attention_factor=None,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        short_factor=None,
        long_factor=None,
        rotary_fraction=1.0,
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
        given = {
            "beta_fast": beta_fast,
            "beta_slow": beta_slow,
            "mscale": mscale,
            "mscale_all_dim": mscale_all_dim,
            "truncate": truncate,
            "attention_factor": attention_factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "short_factor": short_factor,
            "long_factor": long_factor,
        }
        for name, value in given.items():
            scalings, default = SCALING_ARGUMENTS[name]
            if scaling not in scalings and value != default:
                raise ValueError(
                    f"`{name}` applies to scaling in {list(scalings)} only. "
                    f"Received: {name}={value!r}, scaling={scaling!r}"
                )
        check_positive_float("beta_fast", beta_fast)
        check_positive_float("beta_slow", beta_slow)
        if beta_fast <= beta_slow:
            raise ValueError(
                "`beta_fast` must be greater than `beta_slow`. Received: "
                f"beta_fast={beta_fast}, beta_slow={beta_slow}"
            )
        for name in ("mscale", "mscale_all_dim", "attention_factor"):
            if given[name] is not None:
                check_positive_float(name, given[name])
        check_bool("truncate", truncate)
        check_positive_float("low_freq_factor", low_freq_factor)
        check_positive_float("high_freq_factor", high_freq_factor)
        if low_freq_factor >= high_freq_factor:
            raise ValueError(
                "`high_freq_factor` must be greater than `low_freq_factor`. "
                f"Received: low_freq_factor={low_freq_factor}, "
                f"high_freq_factor={high_freq_factor}"
            )
        if scaling == "longrope":
            for name in ("short_factor", "long_factor"):
                _check_factor_list(name, given[name])
        if (
            isinstance(rotary_fraction, bool)
            or not isinstance(rotary_fraction, numbers.Real)
            or not 0.0 < rotary_fraction <= 1.0
        ):
            raise ValueError(
                "`rotary_fraction` must be a number in (0, 1]. "
                f"Received: rotary_fraction={rotary_fraction!r}"
            )
        super().__init__(**kwargs)
        self.max_wavelength = float(max_wavelength)
        self.rotary_dim = rotary_dim
        self.layout = layout
        self.scaling = scaling
        self.scaling_factor = float(scaling_factor)
        self.original_max_length = original_max_length
        self.beta_fast = float(beta_fast)
        self.beta_slow = float(beta_slow)
        self.mscale = None if mscale is None else float(mscale)
        self.mscale_all_dim = None if mscale_all_dim is None else float(mscale_all_dim)
        self.truncate = truncate
        self.attention_factor = (
            None if attention_factor is None else float(attention_factor)
        )
        self.low_freq_factor = float(low_freq_factor)
        self.high_freq_factor = float(high_freq_factor)
        self.short_factor = (
            None if short_factor is None else list(map(float, short_factor))
        )
        self.long_factor = (
            None if long_factor is None else list(map(float, long_factor))
        )
        self.rotary_fraction = float(rotary_fraction)

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
        return self._call_built(inputs, positions=positions)

    def build(self, input_shape):
        if self.scaling in NEEDS_ORIGINAL_LENGTH and self.original_max_length is None:
            raise ValueError(
                f'`original_max_length` is required with scaling="{self.scaling}" '
                "(the ready models fill in their `max_length`, as HF transformers "
                "defaults to `max_position_embeddings`). Received: "
                "original_max_length=None"
            )
        self.resolved_rotary_dim = self._resolve_rotary_dim(input_shape)
        width = self.resolved_rotary_dim
        if self.scaling == "longrope":
            for name in ("short_factor", "long_factor"):
                if len(getattr(self, name)) != width // 2:
                    raise ValueError(
                        f"`{name}` must hold rotary_dim // 2 = {width // 2} "
                        f"factors, one per frequency. Received: {name} of "
                        f"length {len(getattr(self, name))}"
                    )
        self.inverse_frequencies = self._inverse_frequencies(width)
        self.long_inverse_frequencies = None
        if self.scaling == "longrope":
            self.long_inverse_frequencies = self._inverse_frequencies(width, long=True)
        self.cos_sin_factor = 1.0
        if self.scaling == "yarn":
            self.cos_sin_factor = rope_scaling.yarn_attention_factor(
                self.scaling_factor,
                self.mscale,
                self.mscale_all_dim,
                self.attention_factor,
            )
        elif self.scaling == "longrope":
            self.cos_sin_factor = rope_scaling.longrope_attention_factor(
                self.scaling_factor, self.original_max_length, self.attention_factor
            )
        # Dynamic NTK: base' ** (-2i/d) = theta_i * s ** (-2i / (d - 2)) with
        # s = factor * L / L0 - (factor - 1); for d = 2 the only theta is 1.
        ntk_exponents = np.arange(0, width, 2, dtype="float64") / max(width - 2, 1)
        self.ntk_exponents = ntk_exponents.astype("float32")

    def _inverse_frequencies(self, width, long=False):
        """Float32 numpy frequencies of the scaling (p-RoPE applied)."""
        base, factor = self.max_wavelength, self.scaling_factor
        if self.scaling == "ntk":
            frequencies = rope_scaling.ntk_inverse_frequencies(width, base, factor)
        elif self.scaling == "yarn":
            frequencies = rope_scaling.yarn_inverse_frequencies(
                width,
                base,
                factor,
                self.original_max_length,
                self.beta_fast,
                self.beta_slow,
                self.truncate,
            )
        elif self.scaling == "llama3":
            frequencies = rope_scaling.llama3_inverse_frequencies(
                width,
                base,
                factor,
                self.original_max_length,
                self.low_freq_factor,
                self.high_freq_factor,
            )
        elif self.scaling == "longrope":
            frequencies = rope_scaling.longrope_inverse_frequencies(
                width, base, self.long_factor if long else self.short_factor
            )
        else:
            frequencies = rope_scaling.rotary_inverse_frequencies(width, base)
        if self.rotary_fraction < 1.0:
            frequencies = rope_scaling.p_rope_inverse_frequencies(
                frequencies, self.rotary_fraction
            )
        return frequencies.astype("float32")

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
        elif self.scaling == "longrope":
            # The long factors once the call is longer than the training length.
            is_long = ops.max(positions) + 1.0 > float(self.original_max_length)
            inverse_frequencies = ops.where(
                is_long,
                ops.convert_to_tensor(self.long_inverse_frequencies, "float32"),
                inverse_frequencies,
            )
        # (..., seq, rotary_dim / 2)
        angles = ops.expand_dims(positions, -1) * inverse_frequencies
        if self.layout == "half":
            angles = ops.concatenate([angles, angles], axis=-1)
        else:
            # (..., seq, d/2) -> (..., seq, d): each angle twice in a row.
            angles = ops.repeat(angles, 2, axis=-1)
        cos, sin = ops.cos(angles), ops.sin(angles)
        if self.cos_sin_factor != 1.0:
            cos, sin = cos * self.cos_sin_factor, sin * self.cos_sin_factor
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
                "beta_fast": self.beta_fast,
                "beta_slow": self.beta_slow,
                "mscale": self.mscale,
                "mscale_all_dim": self.mscale_all_dim,
                "truncate": self.truncate,
                "attention_factor": self.attention_factor,
                "low_freq_factor": self.low_freq_factor,
                "high_freq_factor": self.high_freq_factor,
                "short_factor": self.short_factor,
                "long_factor": self.long_factor,
                "rotary_fraction": self.rotary_fraction,
            }
        )
        return config

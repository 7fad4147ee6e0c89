"""Rotary position embedding over several position axes: M-RoPE and axial RoPE."""

import numbers

import keras
import numpy as np
from keras import ops

from keras_posenc.layers import rope_scaling
from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.layers.rotary_embedding import LAYOUTS
from keras_posenc.layers.rotary_embedding import rotate_feature_pairs
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_one_of
from keras_posenc.utils.validation import check_positive_float

FREQUENCIES = ("shared", "per_axis")
# Axes of the default `sections` (time, height, width), as Qwen2-VL's M-RoPE.
DEFAULT_NUM_AXES = 3


def _check_sections(sections):
    """`sections` as a list of ints: None or a non-empty list of positive ints."""
    if sections is None:
        return None
    if (
        not isinstance(sections, (list, tuple))
        or not sections
        or any(
            isinstance(size, bool) or not isinstance(size, numbers.Integral)
            for size in sections
        )
        or any(size <= 0 for size in sections)
    ):
        raise ValueError(
            "`sections` must be None or a non-empty list of positive integers, "
            "the number of frequency pairs of each position axis (e.g. "
            f"[16, 24, 24]). Received: sections={sections!r}"
        )
    return [int(size) for size in sections]


def _check_interleaved_sections(sections):
    """Raises unless Qwen3-VL's interleaving gives axis `a` its `sections[a]` pairs.

    Axis `a >= 1` takes the pairs `f < num_axes * sections[a]` with
    `f % num_axes == a`; there are `sections[a]` of them only if
    `num_axes * sections[a]` is at most the number of pairs.
    """
    num_axes, total = len(sections), sum(sections)
    for size in sections[1:]:
        if num_axes * size > total:
            raise ValueError(
                "`sections` must give each axis after the first at most "
                f"sum(sections) / num_axes = {total} / {num_axes} pairs with "
                "`interleave_sections=True`, so that every axis gets its own "
                "count of pairs (Qwen3-VL uses [24, 20, 20]). "
                f"Received: sections={sections}"
            )


def default_sections(num_pairs, interleave_sections=False):
    """The three (t, h, w) sections for `num_pairs` rotary pairs.

    Qwen2-VL's split, `[16, 24, 24]` for 64 pairs (head size 128):
    `t = P // 4`, `h = (P - t) // 2`, `w = P - t - h`. With
    `interleave_sections=True`, Qwen3-VL's `[24, 20, 20]` scaled to `P`
    pairs: `h = w = 5 * P // 16`, `t = P - 2 * h`. Under 8 pairs an axis
    may get none (text tokens, whose axes are equal, are unaffected).
    """
    if interleave_sections:
        height = 5 * num_pairs // 16
        return [num_pairs - 2 * height, height, height]
    time = num_pairs // 4
    height = (num_pairs - time) // 2
    return [time, height, num_pairs - time - height]


@keras.saving.register_keras_serializable(package="keras_posenc")
class MultiAxisRotaryEmbedding(AttentionPosition):
    """Rotary position embedding over several position axes (M-RoPE, 2-D RoPE).

    Each token has one position per axis, e.g. (time, height, width) for the
    tokens of a vision-language model or (row, column) for image patches.
    The rotary frequency pairs are split into `sections`, one per axis: pair
    `f` of a token turns by `p_a * theta_f`, with `p_a` the token's position
    on the axis `a` that pair `f` belongs to. The dot product of a query and
    a key then depends on the differences of their positions on each axis
    only. Text tokens have all axes equal (a 1-D `positions` or
    `start_index` says so), and with the shared frequencies the layer is then
    exactly `RotaryEmbedding(max_wavelength, rotary_dim=2 * sum(sections),
    layout)`, so a text-only model is a plain RoPE model.

    The modes, each equal to its reference implementation (transcribed to
    float64 numpy in the tests):
    - `frequencies="shared"`, `interleave_sections=False`: M-RoPE of
      Qwen2-VL and Qwen2.5-VL, as HF transformers'
      `apply_multimodal_rotary_pos_emb` (with `layout="half"`): one list
      `theta_f = max_wavelength ** (-2f / d)` over all `P = d / 2` pairs,
      `d = 2 * sum(sections)`, and contiguous blocks of pairs per axis, the
      first `sections[0]` pairs (the highest frequencies) on axis 0.
    - `frequencies="shared"`, `interleave_sections=True`: the interleaved
      M-RoPE of Qwen3-VL, as HF's `apply_interleaved_mrope`: pair `f` is on
      axis `a >= 1` when `f % num_axes == a` and `f < num_axes *
      sections[a]`, else on axis 0.
    - `frequencies="per_axis"`: axial 2-D RoPE (RoPE-Axial of Heo et al.,
      2024, as `compute_axial_cis` of naver-ai/rope-vit, with
      `layout="interleaved"`): each axis `a` is a 1-D RoPE of its own,
      `theta_i = max_wavelength ** (-2i / (2 * sections[a]))` for
      `i < sections[a]`, and the axes' pairs follow each other. rope-vit
      puts the column (x) before the row (y) and uses
      `max_wavelength=100`.

    Features from `2 * sum(sections)` on pass through unchanged (as
    `rotary_dim` in `RotaryEmbedding`). As there, frequencies are computed in
    float64 when the layer is built, angles, cos/sin and the rotation in
    float32, and the result is cast once to the compute dtype. The layer has
    no weights.

    Args:
        sections: list of positive ints or None. Number of frequency pairs of
            each position axis (HF's `mrope_section`), so that the number of
            axes is `len(sections)`; `2 * sum(sections)` is the rotary width
            and must be at most the feature dimension. With
            `interleave_sections=True` each of `sections[1:]` times the
            number of axes must be at most `sum(sections)`. Defaults to
            `None`: three axes (t, h, w) over all `P = feature_dim // 2`
            pairs, split as Qwen2-VL (`t = P // 4`, `h = (P - t) // 2`,
            `w = P - t - h`, `[16, 24, 24]` for 128 features) or, with
            `interleave_sections=True`, as Qwen3-VL's `[24, 20, 20]` scaled
            to `P` (`h = w = 5 * P // 16`, `t = P - 2 * h`).
        layout: `"half"` or `"interleaved"`. Which features form a rotated
            pair: `(i, i + d/2)` (Qwen2-VL, Qwen3-VL) or `(2i, 2i + 1)`
            (rope-vit). Defaults to `"half"`.
        interleave_sections: bool. Whether the axes take interleaved pairs
            (Qwen3-VL) rather than contiguous blocks (Qwen2-VL); only with
            `frequencies="shared"`. Defaults to `False`.
        frequencies: `"shared"` or `"per_axis"`. One frequency list over all
            pairs (M-RoPE), or one list per axis (axial RoPE). Defaults to
            `"shared"`.
        max_wavelength: float. The base of the frequencies (`rope_theta`).
            Defaults to `10000`.
        **kwargs: other keyword arguments of `keras.layers.Layer`
            (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(batch_size, sequence_length, ...,
            feature_dim)`, e.g. `(batch_size, sequence_length, num_heads,
            head_dim)` or `(batch_size, sequence_length, feature_dim)`.
        start_index: int or scalar integer tensor. Position of the first
            element of `inputs` on every axis. Defaults to `0`.
        positions: optional integer or float tensor overriding
            `start_index`: `(batch_size, sequence_length, num_axes)` or
            `(sequence_length, num_axes)`, one position per axis, or
            `(sequence_length,)` or `(batch_size, sequence_length)`, the same
            position on every axis (text tokens; the positions an attention
            layer passes by default). A rank-2 tensor whose last axis is the
            sequence length (or, while tracing, either is unknown) is read
            as `(batch_size, sequence_length)`: give per-axis positions of a
            sequence of exactly `num_axes` tokens with a batch axis.

    Returns:
        A tensor of the shape of `inputs`, in the compute dtype.

    Inside `PositionalMultiHeadAttention` the layer rotates queries and keys
    (`rotate`), and `num_position_axes` (`len(sections)`, 3 by default) tells
    the attention layer to take `positions` of shape `(batch_size,
    sequence_length, num_position_axes)` too. Once built,
    `compute_cos_sin(positions)` returns the float32 `(cos, sin)` of shape
    `(..., sequence_length, 2 * sum(sections))` for positions of shape
    `(..., sequence_length, num_position_axes)`, in the order of `layout`;
    `keras_posenc.layers.rotary_embedding.rotate_feature_pairs` applies them,
    and `resolved_sections` holds the sections in use.
    Position ids for vision-language sequences and image grids come from
    `multi_axis_position_ids` and `grid_position_ids` in
    `keras_posenc.preprocessing`.

    Example:

    >>> import numpy as np
    >>> from keras_posenc.layers import MultiAxisRotaryEmbedding
    >>> from keras_posenc.preprocessing import grid_position_ids
    >>> from keras_posenc.preprocessing import multi_axis_position_ids
    >>> # Qwen2-VL: 2 text tokens, a 1 x 2 x 3 image grid, 1 text token.
    >>> positions = multi_axis_position_ids([2, (1, 2, 3), 1])
    >>> positions.shape
    (9, 3)
    >>> query = np.random.normal(size=(1, 9, 4, 32)).astype("float32")
    >>> layer = MultiAxisRotaryEmbedding(sections=[4, 6, 6])
    >>> tuple(layer(query, positions=positions).shape)
    (1, 9, 4, 32)
    >>> # RoPE-Axial on a 4 x 4 patch grid, 8 pairs per axis.
    >>> patches = np.random.normal(size=(2, 16, 32)).astype("float32")
    >>> axial = MultiAxisRotaryEmbedding(
    ...     sections=[8, 8], frequencies="per_axis", layout="interleaved",
    ...     max_wavelength=100)
    >>> tuple(axial(patches, positions=grid_position_ids(4, 4)).shape)
    (2, 16, 32)

    References:
        - [Wang et al., 2024](https://arxiv.org/abs/2409.12191), Qwen2-VL,
          section 2.1 (M-RoPE).
        - [Heo et al., 2024](https://arxiv.org/abs/2403.13298), Rotary
          Position Embedding for Vision Transformer (RoPE-Axial).
    """

    def __init__(
        self,
        sections=None,
        layout="half",
        interleave_sections=False,
        frequencies="shared",
        max_wavelength=10000,
        **kwargs,
    ):
        sections = _check_sections(sections)
        check_one_of("layout", layout, LAYOUTS)
        check_bool("interleave_sections", interleave_sections)
        check_one_of("frequencies", frequencies, FREQUENCIES)
        if interleave_sections and frequencies != "shared":
            raise ValueError(
                "`interleave_sections` must be False unless "
                'frequencies="shared": Qwen3-VL interleaves the axes over one '
                "shared frequency list. "
                f"Received: interleave_sections=True, frequencies={frequencies!r}"
            )
        if interleave_sections and sections is not None:
            _check_interleaved_sections(sections)
        check_positive_float("max_wavelength", max_wavelength)
        super().__init__(**kwargs)
        self.sections = sections
        self.layout = layout
        self.interleave_sections = interleave_sections
        self.frequencies = frequencies
        self.max_wavelength = float(max_wavelength)

    @property
    def num_position_axes(self):
        return DEFAULT_NUM_AXES if self.sections is None else len(self.sections)

    def _resolve_sections(self, feature_dim):
        """The sections for this feature dimension; raises if they do not fit."""
        name = self.__class__.__name__
        if feature_dim is None:
            raise ValueError(
                f"{name} expects inputs of shape (batch_size, sequence_length, "
                "..., feature_dim) with a known feature_dim."
            )
        if self.sections is None:
            if feature_dim % 2:
                raise ValueError(
                    f"{name} with sections=None rotates all features in three "
                    "(t, h, w) sections: the feature dimension (the last axis "
                    "of `inputs`, or the head size) must be even, or "
                    f"`sections` given. Received: feature_dim={feature_dim}"
                )
            return default_sections(feature_dim // 2, self.interleave_sections)
        width = 2 * sum(self.sections)
        if width > feature_dim:
            raise ValueError(
                "2 * sum(`sections`) (the rotary width) must be at most the "
                "feature dimension (the last axis of `inputs`, or the head "
                f"size). Received: sections={self.sections} (width {width}), "
                f"feature_dim={feature_dim}"
            )
        return self.sections

    def _check_inputs_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(
                f"{self.__class__.__name__} expects inputs of shape (batch_size, "
                "sequence_length, ..., feature_dim). "
                f"Received: inputs.shape={input_shape}"
            )
        return self._resolve_sections(input_shape[-1])

    def check_attention(self, num_heads, key_dim):
        self._resolve_sections(key_dim)

    def rotate(self, inputs, positions, is_key=False):
        return self._call_built(inputs, positions=positions)

    def build(self, input_shape):
        sections = self._check_inputs_shape(input_shape)
        self.resolved_sections = list(sections)
        num_pairs = sum(sections)
        # The axis whose position turns each pair.
        num_axes = len(sections)
        if self.interleave_sections:
            pairs = np.arange(num_pairs)
            axis_of_pair = np.zeros(num_pairs, dtype="int32")
            for axis in range(1, num_axes):
                taken = (pairs % num_axes == axis) & (pairs < num_axes * sections[axis])
                axis_of_pair[taken] = axis
        else:
            axis_of_pair = np.repeat(np.arange(num_axes), sections)
        self.axis_of_pair = axis_of_pair.astype("int32")
        if self.frequencies == "shared":
            frequencies = rope_scaling.rotary_inverse_frequencies(
                2 * num_pairs, self.max_wavelength
            )
        else:
            frequencies = np.concatenate(
                [
                    rope_scaling.rotary_inverse_frequencies(
                        2 * size, self.max_wavelength
                    )
                    for size in sections
                ]
            )
        self.inverse_frequencies = frequencies.astype("float32")

    def _cos_sin(self, angles):
        """cos and sin of `(..., seq, P)` angles, in the order of `layout`."""
        if self.layout == "half":
            angles = ops.concatenate([angles, angles], axis=-1)
        else:
            # (..., seq, P) -> (..., seq, 2P): each angle twice in a row.
            angles = ops.repeat(angles, 2, axis=-1)
        return ops.cos(angles), ops.sin(angles)

    def compute_cos_sin(self, positions):
        positions = ops.cast(positions, "float32")
        inverse_frequencies = ops.convert_to_tensor(self.inverse_frequencies, "float32")
        # (..., seq, num_axes) -> (..., seq, P): each pair's own axis.
        per_pair = ops.take(
            positions, ops.convert_to_tensor(self.axis_of_pair, "int32"), axis=-1
        )
        return self._cos_sin(per_pair * inverse_frequencies)

    def _is_multi_axis(self, positions, sequence_length):
        """Whether `positions` has a last axis of one position per axis.

        Rank 3 does, rank 1 does not; rank 2 is `(batch, seq)` when its last
        axis is the sequence length (or unknown), else `(seq, num_axes)`.
        """
        shape = tuple(positions.shape)
        if len(shape) == 3:
            return True
        if len(shape) != 2:
            return False
        last = shape[-1]
        return not (last is None or sequence_length is None or last == sequence_length)

    def _check_multi_axis_positions(self, positions, sequence_length, batch_size):
        shape = tuple(positions.shape)
        expected = "(batch_size, sequence_length, num_axes) or (sequence_length, "
        expected += f"num_axes), num_axes={self.num_position_axes}"
        if shape[-1] is not None and shape[-1] != self.num_position_axes:
            raise ValueError(
                f"The last axis of `positions` must hold one position per axis, "
                f"{expected} (or `positions` of shape (sequence_length,) or "
                f"(batch_size, sequence_length)). Received: positions.shape={shape}"
            )
        length = shape[-2]
        if length is not None and sequence_length is not None:
            if length != sequence_length:
                raise ValueError(
                    f"`positions` must have shape {expected}, with the sequence "
                    f"length {sequence_length}. Received: positions.shape={shape}"
                )
        if len(shape) == 3 and None not in (shape[0], batch_size):
            if shape[0] not in (1, batch_size):
                raise ValueError(
                    "The first axis of `positions` must be 1 or the batch size "
                    f"{batch_size}. Received: positions.shape={shape}"
                )

    def call(self, inputs, start_index=0, positions=None):
        check_float_tensor(self.__class__.__name__, "inputs", inputs)
        sequence_length = inputs.shape[1]
        if positions is not None and self._is_multi_axis(positions, sequence_length):
            self._check_multi_axis_positions(
                positions, sequence_length, inputs.shape[0]
            )
            cos, sin = self.compute_cos_sin(positions)
        else:
            if positions is not None:
                check_positions_shape(
                    positions, sequence_length, inputs.shape[0], integer=False
                )
            positions = position_ids(
                ops.shape(inputs)[1], start_index, positions, dtype="float32"
            )
            # All axes at the same position: no need to pick an axis per pair.
            inverse_frequencies = ops.convert_to_tensor(
                self.inverse_frequencies, "float32"
            )
            cos, sin = self._cos_sin(
                ops.expand_dims(positions, -1) * inverse_frequencies
            )
        outputs = rotate_feature_pairs(inputs, cos, sin, self.layout)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        self._check_inputs_shape(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sections": self.sections,
                "layout": self.layout,
                "interleave_sections": self.interleave_sections,
                "frequencies": self.frequencies,
                "max_wavelength": self.max_wavelength,
            }
        )
        return config

import keras
import numpy as np
from keras import ops

from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.layers.rotary_embedding import RotaryEmbedding
from keras_posenc.layers.rotary_embedding import rotate_feature_pairs
from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import position_ids
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_positive_float


def xpos_log_scales(feature_dim, gamma):
    """`log(zeta_i)`, `zeta_i = (2i/d + gamma) / (1 + gamma)`, repeated per pair.

    Returns a float64 array of shape `(feature_dim,)`: features `2i` and
    `2i + 1` (one rotated pair) share `zeta_i`.
    """
    pair_index = np.arange(feature_dim // 2, dtype="float64")
    zeta = (2.0 * pair_index / feature_dim + gamma) / (1.0 + gamma)
    return np.repeat(np.log(zeta), 2)


@keras.saving.register_keras_serializable(package="keras_posenc")
class XPos(AttentionPosition):
    """Extrapolatable position embedding, xPos (Sun et al., 2022).

    A rotary embedding with interleaved pairs (features `2i` and `2i + 1`, as
    in `keras_posenc.layers.RotaryEmbedding(layout="interleaved")`) whose
    pair `i` is also scaled by `zeta_i ** (n / scale_base)` at position `n`,
    with `zeta_i = (2i/d + gamma) / (1 + gamma)` and `d` the feature
    dimension. Queries are scaled up (`zeta ** (+n / scale_base)`) and keys
    down (`zeta ** (-m / scale_base)`, `downscale=True`), so the attention
    score of a query at `n` and a key at `m` is the rotary score times
    `zeta ** ((n - m) / scale_base)`: it decays with the distance, and depends
    on `n - m` only. Positions are the paper's un-centered ones (the
    reference code centers them on the sequence), so the keys of a KV cache
    stay valid as decoding goes on.

    The scale is computed as `exp(n / scale_base * log(zeta))` in float32,
    like the rotation, and the result is cast once to the compute dtype. Its
    range is set by the smallest `zeta_0 = gamma / (1 + gamma)`: the query
    and the key scales are finite, nonzero float32 normals while
    `n <= 87.3 * scale_base / ln((1 + gamma) / gamma)`, i.e. for positions
    up to 35,694 with the defaults. Beyond that the first pairs of the
    queries turn subnormal, then zero (TensorFlow and JAX flush subnormals
    to zero at once, PyTorch on CPU keeps them), and those of the keys
    overflow to `inf` once `n > 88.7 * scale_base / ln((1 + gamma) / gamma)`,
    from position 36,261 with the defaults. `bfloat16` has the range of
    float32, but under `mixed_float16` the keys' first pairs (for inputs of
    magnitude 1) overflow float16's 65,504 from about position
    `11.09 * scale_base / ln((1 + gamma) / gamma)`, 4,532 with the defaults:
    use `mixed_bfloat16` or float32 for long sequences.

    The layer has no weights.

    Args:
        max_wavelength: float. The base of the rotary frequencies.
            Defaults to `10000.0`.
        scale_base: float. The length `B` over which the scale changes by a
            factor of `zeta`, `512` in the paper. Defaults to `512.0`.
        gamma: float `> 0`. Offset of `zeta`; the paper's `0.4`. Defaults to
            `0.4`.
        **kwargs: other keyword arguments of `keras.layers.Layer`
            (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(batch_size, sequence_length, ...,
            feature_dim)` with an even `feature_dim`, e.g. queries or keys of
            shape `(batch_size, sequence_length, num_heads, head_dim)`.
        start_index: int or scalar integer tensor. Position of the first
            element of `inputs`, e.g. the cache index while decoding.
            Defaults to `0`.
        positions: optional integer (or float) tensor of shape
            `(sequence_length,)` or `(batch_size, sequence_length)`,
            overriding `start_index`.
        downscale: Python bool. `False` for queries (`zeta ** (+n / B)`),
            `True` for keys (`zeta ** (-n / B)`). Defaults to `False`.

    Returns:
        A tensor of the shape of `inputs`, in the compute dtype.

    Input checks: a rank below 3, an unknown or odd feature dimension or a
    non-float dtype raise when the layer is built or called. `positions` may
    be fractional; its shape is checked against the static axes only. A
    negative Python `start_index` raises; a tensor's value is not checked,
    nor whether a position lies within the limits above.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> query = np.random.normal(size=(2, 10, 4, 16)).astype("float32")
    >>> key = np.random.normal(size=(2, 10, 4, 16)).astype("float32")
    >>> layer = keras_posenc.layers.XPos()
    >>> tuple(layer(query).shape)
    (2, 10, 4, 16)
    >>> tuple(layer(key, downscale=True).shape)
    (2, 10, 4, 16)

    References:
        - [Sun et al., 2022](https://arxiv.org/abs/2212.10554), section 3.2.
    """

    def __init__(self, max_wavelength=10000.0, scale_base=512.0, gamma=0.4, **kwargs):
        check_positive_float("max_wavelength", max_wavelength)
        check_positive_float("scale_base", scale_base)
        # gamma = 0 would make zeta_0 = 0, whose log is -inf.
        check_positive_float("gamma", gamma)
        super().__init__(**kwargs)
        self.max_wavelength = float(max_wavelength)
        self.scale_base = float(scale_base)
        self.gamma = float(gamma)
        self.rotary_embedding = RotaryEmbedding(
            max_wavelength=self.max_wavelength,
            layout="interleaved",
            dtype=self.dtype_policy,
            name="rotary_embedding",
        )

    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3 or input_shape[-1] is None or input_shape[-1] % 2:
            raise ValueError(
                "XPos expects inputs of shape (batch_size, sequence_length, ..., "
                "feature_dim) with a known, even feature_dim (it rotates pairs "
                f"of features). Received: inputs.shape={input_shape}"
            )

    def check_attention(self, num_heads, key_dim):
        if key_dim % 2:
            raise ValueError(
                f"XPos rotates pairs of features: the head size ({key_dim}) "
                "must be even."
            )

    def rotate(self, inputs, positions, is_key=False):
        # Keys are scaled down by the inverse of the queries' scale.
        return self._call_built(inputs, positions=positions, downscale=is_key)

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        self.rotary_embedding.build(input_shape)
        self.log_scales = xpos_log_scales(input_shape[-1], self.gamma).astype("float32")

    def call(self, inputs, start_index=0, positions=None, downscale=False):
        check_float_tensor("XPos", "inputs", inputs)
        if positions is not None:
            check_positions_shape(
                positions, inputs.shape[1], inputs.shape[0], integer=False
            )
        positions = position_ids(
            ops.shape(inputs)[1], start_index, positions, dtype="float32"
        )
        cos, sin = self.rotary_embedding.compute_cos_sin(positions)
        # (..., seq, feature_dim), in float32 like cos and sin.
        exponent = ops.expand_dims(positions / self.scale_base, -1) * (
            ops.convert_to_tensor(self.log_scales, "float32")
        )
        scale = ops.exp(-exponent if downscale else exponent)
        for _ in range(len(inputs.shape) - 3):
            scale = ops.expand_dims(scale, -2)
        # Scaling after the rotation (not folding the scale into cos and sin)
        # keeps tiny query scales from underflowing twice.
        outputs = rotate_feature_pairs(inputs, cos, sin, "interleaved") * scale
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_wavelength": self.max_wavelength,
                "scale_base": self.scale_base,
                "gamma": self.gamma,
            }
        )
        return config

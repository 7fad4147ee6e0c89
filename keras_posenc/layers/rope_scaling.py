"""Inverse frequencies and attention factors of the RoPE context extensions.

Float64 numpy, computed once when a `RotaryEmbedding` is built, each as HF
transformers' `modeling_rope_utils.py` computes it (names of HF's
`rope_scaling` keys in parentheses): `ntk`, `yarn`, `llama3` and `longrope`.
`d` is the rotary width, `base` the `max_wavelength`, `factor` the
`scaling_factor` and `original_max_length` HF's
`original_max_position_embeddings`.
"""

import math

import numpy as np

from keras_posenc.layers.sinusoidal_position_encoding import (
    sinusoidal_inverse_frequencies,
)


def rotary_inverse_frequencies(rotary_dim, max_wavelength):
    """`max_wavelength ** (-2i / rotary_dim)` for `i < rotary_dim / 2`, in float64.

    The frequencies of the sinusoidal encoding (Su et al. build RoPE on them).
    """
    return sinusoidal_inverse_frequencies(rotary_dim, max_wavelength)


def ntk_inverse_frequencies(rotary_dim, max_wavelength, factor):
    """Static NTK-aware scaling: the base times `factor ** (d / (d - 2))`."""
    exponent = rotary_dim / max(rotary_dim - 2, 1)
    return rotary_inverse_frequencies(rotary_dim, max_wavelength * factor**exponent)


def yarn_inverse_frequencies(
    rotary_dim,
    max_wavelength,
    factor,
    original_max_length,
    beta_fast=32.0,
    beta_slow=1.0,
    truncate=True,
):
    """YaRN frequencies, as HF transformers' `_compute_yarn_parameters`.

    Dimensions that turn fewer than `beta_slow` times over the original context
    are interpolated (`theta / factor`), those that turn more than `beta_fast`
    times are kept (`theta`), with a linear ramp over the dimensions between;
    `truncate` rounds the ends of the ramp to whole dimensions.
    """
    theta = rotary_inverse_frequencies(rotary_dim, max_wavelength)

    def correction_dim(num_rotations):
        return (
            rotary_dim * math.log(original_max_length / (num_rotations * 2 * math.pi))
        ) / (2 * math.log(max_wavelength))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001  # Prevent a division by zero, as HF does.
    ramp = np.clip((np.arange(rotary_dim // 2) - low) / (high - low), 0.0, 1.0)
    extrapolation = 1.0 - ramp
    return (theta / factor) * (1.0 - extrapolation) + theta * extrapolation


def yarn_mscale(factor, mscale=1.0):
    """`0.1 * mscale * ln(factor) + 1`, or 1 for `factor <= 1`."""
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_attention_factor(
    factor, mscale=None, mscale_all_dim=None, attention_factor=None
):
    """The factor on cos and sin: given, the mscale ratio (DeepSeek), or the paper's."""
    if attention_factor is not None:
        return float(attention_factor)
    if mscale and mscale_all_dim:
        return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    return yarn_mscale(factor)


def llama3_inverse_frequencies(
    rotary_dim,
    max_wavelength,
    factor,
    original_max_length,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
):
    """Llama 3.1's frequencies, as HF transformers' `_compute_llama3_parameters`.

    Wavelengths shorter than `original_max_length / high_freq_factor` are
    kept, longer than `original_max_length / low_freq_factor` divided by
    `factor`, and those between interpolated smoothly.
    """
    theta = rotary_inverse_frequencies(rotary_dim, max_wavelength)
    wavelength = 2 * math.pi / theta
    low_freq_wavelength = original_max_length / low_freq_factor
    high_freq_wavelength = original_max_length / high_freq_factor
    scaled = np.where(wavelength > low_freq_wavelength, theta / factor, theta)
    smooth = (original_max_length / wavelength - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength)
    return np.where(medium, smoothed, scaled)


def longrope_inverse_frequencies(rotary_dim, max_wavelength, factors):
    """LongRoPE: each frequency divided by its own rescale factor."""
    return rotary_inverse_frequencies(rotary_dim, max_wavelength) / np.asarray(
        factors, "float64"
    )


def longrope_attention_factor(factor, original_max_length, attention_factor=None):
    """`sqrt(1 + ln factor / ln original_max_length)` unless given (HF's default)."""
    if attention_factor is not None:
        return float(attention_factor)
    if factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(original_max_length))


def p_rope_inverse_frequencies(inverse_frequencies, fraction):
    """p-RoPE (Barbero et al. 2024): only the highest `fraction` of frequencies turn.

    The frequencies are in decreasing order; the others become 0, so their
    feature pairs pass through unrotated (a position-free channel).
    """
    kept = int(fraction * len(inverse_frequencies))
    inverse_frequencies = np.array(inverse_frequencies, "float64")
    inverse_frequencies[kept:] = 0.0
    return inverse_frequencies

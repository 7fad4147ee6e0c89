"""The RoPE family against HF transformers' `modeling_rope_utils.py`, in numpy.

Each `hf_*` function is a float64 transcription of the HF function of that
name (`_compute_ntk_parameters`, `_compute_yarn_parameters`,
`_compute_llama3_parameters`, `_compute_longrope_parameters`), written from
HF's code independently of the library's `rope_scaling` module.
"""

import math

import numpy as np
import pytest

from keras_posenc import positions as position_schemes
from keras_posenc.layers import RotaryEmbedding
from keras_posenc.utils import to_numpy
from tests.layers.test_rotary_embedding import rope_reference


def _default(base, dim):
    return 1.0 / base ** (np.arange(0, dim, 2, dtype="float64") / dim)


def hf_ntk(base, dim, factor):
    base = base * factor ** (dim / (dim - 2))
    return _default(base, dim), 1.0


def hf_yarn(
    base,
    dim,
    factor,
    original,
    beta_fast=32.0,
    beta_slow=1.0,
    mscale=None,
    mscale_all_dim=None,
    attention_factor=None,
    truncate=True,
):
    def get_mscale(scale, mscale=1):
        if scale <= 1:
            return 1.0
        return 0.1 * mscale * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = get_mscale(factor, mscale) / get_mscale(
                factor, mscale_all_dim
            )
        else:
            attention_factor = get_mscale(factor)

    def find_correction_dim(num_rotations):
        return (dim * math.log(original / (num_rotations * 2 * math.pi))) / (
            2 * math.log(base)
        )

    low = find_correction_dim(beta_fast)
    high = find_correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype="float64") - low) / (high - low), 0, 1)
    pos_freqs = base ** (np.arange(0, dim, 2, dtype="float64") / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    extrapolation_factor = 1 - ramp
    inv_freq = (
        interpolation * (1 - extrapolation_factor)
        + extrapolation * extrapolation_factor
    )
    return inv_freq, attention_factor


def hf_llama3(base, dim, factor, original, low_freq_factor=1.0, high_freq_factor=4.0):
    inv_freq = _default(base, dim)
    low_freq_wavelen = original / low_freq_factor
    high_freq_wavelen = original / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (original / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + (
        smooth_factor * inv_freq_llama
    )
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama), 1.0


def hf_longrope(base, dim, factor, original, short, long, seq_len, attention=None):
    if attention is None:
        attention = (
            1.0
            if factor <= 1.0
            else math.sqrt(1 + math.log(factor) / math.log(original))
        )
    ext = np.asarray(long if seq_len > original else short, "float64")
    inv_freq = 1.0 / (ext * base ** (np.arange(0, dim, 2, dtype="float64") / dim))
    return inv_freq, attention


def _check(layer, inverse, attention_factor, start=0, positions=None):
    x = np.random.default_rng(0).normal(size=(2, 5, 2, 16)).astype("float32")
    if positions is None:
        positions = np.arange(start, start + 5)
    expected = rope_reference(
        x, positions, inverse_frequencies=inverse, attention_factor=attention_factor
    )
    actual = to_numpy(layer(x, positions=positions.astype("int32")))
    np.testing.assert_allclose(actual, expected, atol=2e-5)
    np.testing.assert_allclose(layer.inverse_frequencies, inverse, rtol=1e-5)


@pytest.mark.parametrize("factor", [2.0, 4.0, 8.0])
def test_ntk_matches_hf(factor):
    layer = RotaryEmbedding(scaling="ntk", scaling_factor=factor)
    inverse, attention = hf_ntk(10000.0, 16, factor)
    _check(layer, inverse, attention, start=300)


@pytest.mark.parametrize(
    "factor, original, extra",
    [
        (4.0, 64, {}),
        (8.0, 2048, {"beta_fast": 16.0, "beta_slow": 2.0}),
        (16.0, 4096, {"mscale": 1.0, "mscale_all_dim": 0.707}),
        (4.0, 512, {"truncate": False}),
        (2.0, 128, {"attention_factor": 1.5}),
    ],
)
def test_yarn_matches_hf(factor, original, extra):
    layer = RotaryEmbedding(
        scaling="yarn", scaling_factor=factor, original_max_length=original, **extra
    )
    inverse, attention = hf_yarn(10000.0, 16, factor, original, **extra)
    _check(layer, inverse, attention, start=100)
    assert layer.cos_sin_factor == pytest.approx(attention, rel=1e-12)


@pytest.mark.parametrize(
    "factor, original, low, high",
    [(8.0, 8192, 1.0, 4.0), (32.0, 8192, 1.0, 4.0), (4.0, 64, 2.0, 8.0)],
)
def test_llama3_matches_hf(factor, original, low, high):
    layer = RotaryEmbedding(
        max_wavelength=500000.0,
        scaling="llama3",
        scaling_factor=factor,
        original_max_length=original,
        low_freq_factor=low,
        high_freq_factor=high,
    )
    inverse, attention = hf_llama3(500000.0, 16, factor, original, low, high)
    _check(layer, inverse, attention, start=1000)


@pytest.mark.parametrize("factor, attention", [(4.0, None), (16.0, None), (4.0, 1.2)])
def test_longrope_switches_factors_with_the_length_as_hf(factor, attention):
    rng = np.random.default_rng(1)
    short = list(1.0 + rng.random(8))
    long = list(2.0 + 4.0 * rng.random(8))
    original = 32
    layer = RotaryEmbedding(
        scaling="longrope",
        scaling_factor=factor,
        original_max_length=original,
        short_factor=short,
        long_factor=long,
        attention_factor=attention,
    )
    # Up to the training length: the short factors (HF's seq_len <= L0).
    inverse, cos_sin = hf_longrope(
        10000.0, 16, factor, original, short, long, 30, attention
    )
    _check(layer, inverse, cos_sin, start=25)
    # A call reaching past it, by start_index or by positions: the long ones.
    inverse, cos_sin = hf_longrope(
        10000.0, 16, factor, original, short, long, 40, attention
    )
    x = np.random.default_rng(0).normal(size=(2, 5, 2, 16)).astype("float32")
    expected = rope_reference(
        x, np.arange(35, 40), inverse_frequencies=inverse, attention_factor=cos_sin
    )
    np.testing.assert_allclose(to_numpy(layer(x, start_index=35)), expected, atol=2e-5)
    np.testing.assert_allclose(layer.long_inverse_frequencies, inverse, rtol=1e-5)
    positions = np.array([[0, 1, 2, 3, 4], [30, 31, 32, 33, 34]])
    expected = rope_reference(
        x, positions, inverse_frequencies=inverse, attention_factor=cos_sin
    )
    np.testing.assert_allclose(
        to_numpy(layer(x, positions=positions)), expected, atol=2e-5
    )


def test_p_rope_keeps_the_highest_frequencies():
    layer = RotaryEmbedding(rotary_fraction=0.5)
    x = np.random.default_rng(0).normal(size=(1, 5, 1, 16)).astype("float32")
    inverse = _default(10000.0, 16)
    inverse[4:] = 0.0  # the four lowest of eight frequencies do not turn
    _check(layer, inverse, 1.0, start=7)
    # Pairs (i, i + 8) for i >= 4 pass through unrotated.
    out = to_numpy(layer(x, start_index=7))
    np.testing.assert_allclose(out[..., 4:8], x[..., 4:8], atol=1e-6)
    np.testing.assert_allclose(out[..., 12:], x[..., 12:], atol=1e-6)


def test_scalings_through_the_resolver_config():
    layer = position_schemes.get(
        {
            "class_name": "rotary",
            "config": {
                "scaling": "llama3",
                "scaling_factor": 8.0,
                "original_max_length": 8192,
                "high_freq_factor": 4.0,
            },
        }
    )
    assert (layer.scaling, layer.original_max_length) == ("llama3", 8192)
    revived = RotaryEmbedding.from_config(layer.get_config())
    assert revived.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"scaling": "linear", "scaling_factor": 2.0, "beta_fast": 8.0}, "beta_fast"),
        ({"scaling": "yarn", "scaling_factor": 2.0, "low_freq_factor": 2.0}, "low"),
        ({"scaling": None, "short_factor": [1.0]}, "short_factor"),
        ({"scaling": "yarn", "scaling_factor": 2.0, "beta_fast": 0.5}, "beta_fast"),
        ({"scaling": "yarn", "scaling_factor": 2.0, "truncate": 1}, "truncate"),
        ({"scaling": "yarn", "scaling_factor": 2.0, "mscale": -1.0}, "mscale"),
        (
            {"scaling": "llama3", "scaling_factor": 2.0, "high_freq_factor": 0.5},
            "high_freq_factor",
        ),
        ({"scaling": "longrope", "scaling_factor": 2.0}, "short_factor"),
        (
            {"scaling": "longrope", "short_factor": [1.0], "long_factor": [0.0]},
            "long_factor",
        ),
        ({"rotary_fraction": 0.0}, "rotary_fraction"),
        ({"rotary_fraction": 1.5}, "rotary_fraction"),
    ],
)
def test_invalid_scaling_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}"):
        RotaryEmbedding(**kwargs)


def test_longrope_factor_count_is_checked_when_built():
    layer = RotaryEmbedding(
        scaling="longrope",
        scaling_factor=2.0,
        original_max_length=16,
        short_factor=[1.0] * 3,
        long_factor=[2.0] * 3,
    )
    with pytest.raises(ValueError, match=r"`short_factor` must hold .* = 8"):
        layer(np.zeros((1, 2, 1, 16), "float32"))

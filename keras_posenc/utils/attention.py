"""Attention with an additive bias whose gradient is needed (learned biases).

`keras.ops.dot_product_attention` is the reference. When the bias is learned,
its gradient is the batch sum of the logits' gradient. Measured on a 2-core
CPU (forward+backward, L=512, batch 8, 8 heads of 64, the sizes of
`benchmarks/speed.py`; ratio to attention without a bias; a busy machine):

- JAX: `jax.nn.dot_product_attention` (XLA) sums the bias gradient with a
  reduce over the leading batch axis, which XLA's CPU backend runs several
  times slower than a dot with a vector of ones. T5: 1.32x by the reference,
  0.63x by `einsum_biased_attention` (its plain einsum core also beats
  `jax.nn`'s on CPU); the gather of the bucket table costs nothing measurable
  (1.02x with the bias gradient stopped).
- TensorFlow: 1.13x by the reference, 1.18x by the einsum route: not used.
- PyTorch: a bias that requires a gradient makes `scaled_dot_product_attention`
  leave its fused kernel for `_scaled_dot_product_attention_math` (1.9-2.8x);
  the einsum route was slower still, and FlexAttention (torch 2.13) has no
  backward on CPU: the reference stays.

`biased_attention` takes the einsum route where it was measured to help (JAX,
float32); tests/utils/test_attention.py checks it against the reference on
every backend.
"""

import keras
from keras import ops


def reference_biased_attention(query, key, value, bias, scale):
    """`keras.ops.dot_product_attention` with `bias`, never a flash kernel."""
    return ops.dot_product_attention(
        query, key, value, bias=bias, scale=scale, flash_attention=False
    )


def _reduce_to_shape(gradient, shape):
    """Sums `gradient` (batch, heads, T, S) over the axes `shape` broadcasts."""
    if shape[1] == 1 and gradient.shape[1] != 1:
        gradient = ops.sum(gradient, axis=1, keepdims=True)
    if shape[0] == 1 and gradient.shape[0] != 1:
        # A dot with ones, not a reduce: XLA on CPU runs a reduce over the
        # leading axis of a (batch, heads, T, S) tensor several times slower.
        ones = ops.ones((ops.shape(gradient)[0],), dtype=gradient.dtype)
        gradient = ops.expand_dims(ops.einsum("b,bnts->nts", ones, gradient), 0)
    return gradient


def einsum_biased_attention(query, key, value, bias, scale):
    """Attention whose backward pass is written out, in `keras.ops`.

    Args:
        query: `(batch, T, heads, key_dim)`.
        key: `(batch, S, heads, key_dim)`.
        value: `(batch, S, heads, value_dim)`.
        bias: `(batch or 1, heads or 1, T, S)` additive logit bias.
        scale: float. Multiplies the query-key dot products.

    Returns:
        `(batch, T, heads, value_dim)`.
    """

    @ops.custom_gradient
    def attention(query, key, value, bias):
        logits = ops.einsum("btnh,bsnh->bnts", query, key) * scale + bias
        # (batch, heads, T, S), kept for the backward pass. Written out:
        # `ops.softmax` warns on a key axis of size 1 (a one-token sequence).
        weights = ops.exp(logits - ops.max(logits, axis=-1, keepdims=True))
        weights = weights / ops.sum(weights, axis=-1, keepdims=True)
        output = ops.einsum("bnts,bsnh->btnh", weights, value)

        def gradient(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            weights_gradient = ops.einsum("btnh,bsnh->bnts", upstream, value)
            # (batch, heads, T, 1): the softmax's sum_s weights * gradient.
            row_term = ops.expand_dims(
                ops.einsum("btnh,btnh->bnt", upstream, output), -1
            )
            logits_gradient = weights * (weights_gradient - row_term)
            return (
                ops.einsum("bnts,bsnh->btnh", logits_gradient, key) * scale,
                ops.einsum("bnts,btnh->bsnh", logits_gradient, query) * scale,
                ops.einsum("bnts,btnh->bsnh", weights, upstream),
                _reduce_to_shape(logits_gradient, bias.shape),
            )

        return output, gradient

    return attention(query, key, value, bias)


def biased_attention(query, key, value, bias, scale):
    """Attention with an additive `bias`, by the fastest route measured.

    Args:
        query: `(batch, T, heads, key_dim)`.
        key: `(batch, S, heads, key_dim)`.
        value: `(batch, S, heads, value_dim)`.
        bias: `(batch or 1, heads or 1, T, S)`, in the dtype of `query`.
        scale: float. Multiplies the query-key dot products.

    Returns:
        `(batch, T, heads, value_dim)`.
    """
    if (
        keras.config.backend() == "jax"
        and all(
            keras.backend.standardize_dtype(tensor.dtype) == "float32"
            for tensor in (query, key, value, bias)
        )
        and None not in bias.shape[:2]
    ):
        return einsum_biased_attention(query, key, value, bias, scale)
    return reference_biased_attention(query, key, value, bias, scale)

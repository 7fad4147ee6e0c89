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
every backend. The full benchmark (idle machine, 2026-12-03, README
"Performance") measures the routes taken for T5 at L=512 / 2048: JAX 0.79x /
0.44x, TensorFlow 1.03x / 1.31x, PyTorch 2.49x / 2.57x.

Shaw et al. attention (`shaw_attention`, taken by `RelativePositionEmbedding.
compute_attention`) writes out its backward pass the same way. Forward+
backward vs plain attention, same sizes and machine, reference and
`shaw_attention` interleaved in one process (busy machine, noisy):

- JAX: time 1.36x / 1.45x (L=512 / 1024) by the reference, 1.48x / 1.46x by
  `shaw_attention`; XLA temporary memory 2.19x / 2.18x -> 1.62x / 1.56x (one
  `(batch, heads, T, S)` tensor fewer): taken, for the memory.
- PyTorch: 5.24x / 6.22x -> 4.25x / 4.28x: taken. Plain attention is the
  fused SDPA kernel, which Shaw's value term (it needs the weights) cannot use.
- TensorFlow: 1.3x by the reference, 1.5-1.6x by a written-out gradient
  (L=1024): not used.

The full benchmark, L=512 / 2048: JAX 1.55x / 1.47x (memory 1.62x / 1.54x),
TensorFlow 1.60x / 1.60x, PyTorch 4.79x / 7.15x.
"""

import keras
from keras import ops

from keras_posenc.utils.masks import MASKED_LOGIT


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


# Backends where `shaw_attention` was measured faster (module docstring).
SHAW_ATTENTION_BACKENDS = ("jax", "torch")


def bucket_one_hot(index, num_buckets, dtype):
    """One-hot `(T, S, buckets)` or `(batch, T, S, buckets)` of `index`."""
    return ops.one_hot(index, num_buckets, dtype=dtype)


def bucket_sums(weights, buckets):
    """`(batch, heads, T, S)` summed per bucket: `(batch, heads, T, buckets)`.

    `buckets` is the one-hot of `bucket_one_hot`; this is also the gradient
    of `gather_buckets` with respect to its table.
    """
    if len(buckets.shape) == 3:
        return ops.einsum("bnts,tsr->bntr", weights, buckets)
    return ops.einsum("bnts,btsr->bntr", weights, buckets)


def gather_buckets(table, buckets):
    """Entry `(.., t, index[t, s])` of a `(batch, heads, T, buckets)` table.

    A matmul with the one-hot rather than `take_along_axis`; it is also the
    gradient of `bucket_sums` with respect to its weights.
    """
    if len(buckets.shape) == 3:
        return ops.einsum("bntr,tsr->bnts", table, buckets)
    return ops.einsum("bntr,btsr->bnts", table, buckets)


def shaw_attention(query, key, value, key_table, value_table, index, scale, mask=None):
    """Shaw et al. (2018) relative attention whose backward pass is written out.

    `logits = (q_t . k_s + q_t . key_table[index[t, s]]) * scale`, masked,
    softmax, then `output = sum_s w_ts (v_s + value_table[index[t, s]])`.
    Autodiff through the reference (`RelativePositionEmbedding` on the
    explicit path) scatters the gradient of the bucket gather and keeps
    several `(batch, heads, T, S)` tensors; here the gather's gradient is a
    bucket sum and the bucket sum's a gather (both matmuls with one one-hot
    shared by the batch and heads), and only the weights are kept.

    Args:
        query: `(batch, T, heads, key_dim)`.
        key: `(batch, S, heads, key_dim)`.
        value: `(batch, S, heads, key_dim)`.
        key_table: `(buckets, key_dim)`, `E_K`.
        value_table: `(buckets, key_dim)`, `E_V`.
        index: int `(T, S)` or `(batch, T, S)`, the bucket of each pair.
        scale: float. Multiplies the logits.
        mask: optional bool `(batch or 1, T, S)`, True where allowed.

    Returns:
        `(batch, T, heads, key_dim)`.
    """
    buckets = bucket_one_hot(index, key_table.shape[0], query.dtype)
    if mask is not None:
        mask = ops.expand_dims(mask, 1)  # (batch or 1, 1, T, S)

    @ops.custom_gradient
    def attention(query, key, value, key_table, value_table):
        # The scale folded into the queries: one pass over (T, key_dim)
        # instead of one over (T, S), forward and backward.
        scaled_query = query * scale
        logits = ops.einsum("btnh,bsnh->bnts", scaled_query, key) + gather_buckets(
            ops.einsum("btnh,rh->bntr", scaled_query, key_table), buckets
        )
        if mask is not None:
            logits = ops.where(mask, logits, MASKED_LOGIT)
        if logits.shape[-1] == 1:
            # `ops.softmax` warns on a one-token key axis: every weight is 1.
            weights = ops.ones_like(logits)
        else:
            weights = ops.softmax(logits, axis=-1)  # (batch, heads, T, S)
        bucket_weights = bucket_sums(weights, buckets)  # (batch, heads, T, buckets)
        output = ops.einsum("bnts,bsnh->btnh", weights, value) + ops.einsum(
            "bntr,rh->btnh", bucket_weights, value_table
        )

        def gradient(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            weights_gradient = ops.einsum(
                "btnh,bsnh->bnts", upstream, value
            ) + gather_buckets(
                ops.einsum("btnh,rh->bntr", upstream, value_table), buckets
            )
            # (batch, heads, T, 1): the softmax's sum_s w_ts * gradient_ts,
            # which is upstream . output, both value terms included.
            row_term = ops.expand_dims(
                ops.einsum("btnh,btnh->bnt", upstream, output), -1
            )
            logits_gradient = weights * (weights_gradient - row_term)
            if mask is not None:
                # A fully masked row has uniform weights but no gradient.
                logits_gradient = ops.where(mask, logits_gradient, 0.0)
            bucket_gradient = bucket_sums(logits_gradient, buckets)
            query_gradient = ops.einsum(
                "bnts,bsnh->btnh", logits_gradient, key
            ) + ops.einsum("bntr,rh->btnh", bucket_gradient, key_table)
            return (
                query_gradient * scale,
                ops.einsum("bnts,btnh->bsnh", logits_gradient, scaled_query),
                ops.einsum("bnts,btnh->bsnh", weights, upstream),
                ops.einsum("bntr,btnh->rh", bucket_gradient, scaled_query),
                ops.einsum("bntr,btnh->rh", bucket_weights, upstream),
            )

        return output, gradient

    return attention(query, key, value, key_table, value_table)


def shaw_attention_is_faster():
    """Whether `shaw_attention` beat the reference on this backend."""
    return keras.config.backend() in SHAW_ATTENTION_BACKENDS

"""Peak temporary memory of Shaw et al. relative attention, from XLA's own count.

Compiles, on the JAX backend, one attention step for batch 1, 4 heads of 64,
`max_distance=16`, and reads `memory_analysis().temp_size_in_bytes` of the
compiled function (deterministic, no run needed):

- `plain`: `keras.ops.dot_product_attention(q, k, v)`;
- `shaw`: the same attention written out, plus `compute_logits` (added before
  the scaling) and `compute_values` (added to the output) of
  `keras_posenc.layers.RelativePositionEmbedding`;
- `terms`: `compute_logits` and `compute_values` alone, the weights given;
- `one_hot`: `shaw` with the bucket sums taken by
  `einsum("bhqk,qkr->bhqr", weights, one_hot(r))` instead;
- `naive`: `shaw` with the paper's `(L, L, d)` tensors `a^K`, `a^V`.

`fwd+bwd` compiles the gradient of the output's sum with respect to q, k, v
and both tables. Run with:

    KERAS_BACKEND=jax python benchmarks/shaw_memory.py
"""

import os

os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
from keras import ops  # noqa: E402

from keras_posenc.layers import RelativePositionEmbedding  # noqa: E402

BATCH, HEADS, HEAD_DIM, MAX_DISTANCE = 1, 4, 64, 16
LENGTHS = (256, 512, 1024)


def _attention_weights(query, key, extra_logits):
    logits = ops.einsum("bqhd,bkhd->bhqk", query, key) + extra_logits
    return ops.softmax(logits / HEAD_DIM**0.5, axis=-1)


def _positions(length):
    return ops.arange(length, dtype="int32")


def plain(layer, query, key, value, key_table, value_table):
    return ops.dot_product_attention(query, key, value)


def shaw(layer, query, key, value, key_table, value_table):
    with keras.StatelessScope(
        state_mapping=[
            (layer.key_embeddings, key_table),
            (layer.value_embeddings, value_table),
        ]
    ):
        positions = _positions(query.shape[1])
        weights = _attention_weights(
            query, key, layer.compute_logits(query, positions, positions)
        )
        return ops.einsum("bhqk,bkhd->bqhd", weights, value) + layer.compute_values(
            weights, positions, positions
        )


def terms(layer, query, weights, key_table, value_table):
    with keras.StatelessScope(
        state_mapping=[
            (layer.key_embeddings, key_table),
            (layer.value_embeddings, value_table),
        ]
    ):
        positions = _positions(query.shape[1])
        return layer.compute_logits(query, positions, positions), layer.compute_values(
            weights, positions, positions
        )


def one_hot(layer, query, key, value, key_table, value_table):
    with keras.StatelessScope(state_mapping=[(layer.key_embeddings, key_table)]):
        positions = _positions(query.shape[1])
        weights = _attention_weights(
            query, key, layer.compute_logits(query, positions, positions)
        )
    index = layer.relative_position_index(positions, positions)
    buckets = ops.one_hot(index, layer.num_buckets, dtype=weights.dtype)
    bucket_weights = ops.einsum("bhqk,qkr->bhqr", weights, buckets)
    return ops.einsum("bhqk,bkhd->bqhd", weights, value) + ops.einsum(
        "bhqr,rd->bqhd", bucket_weights, value_table
    )


def naive(layer, query, key, value, key_table, value_table):
    positions = _positions(query.shape[1])
    index = layer.relative_position_index(positions, positions)
    a_key = ops.take(key_table, index, axis=0)  # (L, L, d)
    a_value = ops.take(value_table, index, axis=0)  # (L, L, d)
    weights = _attention_weights(query, key, ops.einsum("bqhd,qkd->bhqk", query, a_key))
    return ops.einsum("bhqk,bkhd->bqhd", weights, value) + ops.einsum(
        "bhqk,qkd->bqhd", weights, a_value
    )


def temp_bytes(function, *args):
    compiled = jax.jit(function).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def gradient_temp_bytes(function, layer, *args):
    def loss(*arrays):
        return ops.sum(function(layer, *arrays))

    return temp_bytes(jax.grad(loss, argnums=tuple(range(len(args)))), *args)


def main():
    layer = RelativePositionEmbedding(max_distance=MAX_DISTANCE)
    layer.build((BATCH, None, HEADS, HEAD_DIM))
    key_table = ops.convert_to_tensor(layer.key_embeddings)
    value_table = ops.convert_to_tensor(layer.value_embeddings)
    mib = 2.0**20
    print(
        f"JAX {jax.__version__} on {jax.devices()[0].platform}; batch {BATCH}, "
        f"{HEADS} heads of {HEAD_DIM}, max_distance {MAX_DISTANCE}. "
        "Temporary MiB from memory_analysis(); ratio = x / plain."
    )
    header = (
        f"{'L':>5} {'pass':>8} {'weights':>8} {'plain':>8} {'shaw':>8} "
        f"{'ratio':>6} {'terms':>8} {'one_hot':>8} {'ratio':>6} "
        f"{'naive':>8} {'ratio':>6}"
    )
    print(header)
    for length in LENGTHS:
        shape = (BATCH, length, HEADS, HEAD_DIM)
        query, key, value = (
            keras.random.normal(shape, seed=seed) for seed in (1, 2, 3)
        )
        weights = ops.softmax(
            keras.random.normal((BATCH, HEADS, length, length), seed=4), axis=-1
        )
        args = (query, key, value, key_table, value_table)
        attention_mib = BATCH * HEADS * length * length * 4 / mib
        for label in ("fwd", "fwd+bwd"):
            if label == "fwd":
                measured = {
                    name: temp_bytes(lambda *a, f=f: f(layer, *a), *args) / mib
                    for name, f in (
                        ("plain", plain),
                        ("shaw", shaw),
                        ("one_hot", one_hot),
                        ("naive", naive),
                    )
                }
                measured["terms"] = (
                    temp_bytes(
                        lambda *a: terms(layer, *a),
                        query,
                        weights,
                        key_table,
                        value_table,
                    )
                    / mib
                )
            else:
                measured = {
                    name: gradient_temp_bytes(f, layer, *args) / mib
                    for name, f in (
                        ("plain", plain),
                        ("shaw", shaw),
                        ("one_hot", one_hot),
                        ("naive", naive),
                    )
                }
                measured["terms"] = None
            base = measured["plain"]
            terms_mib = measured["terms"]
            terms_text = "-" if terms_mib is None else f"{terms_mib:.1f}"
            print(
                f"{length:>5} {label:>8} {attention_mib:>8.1f} {base:>8.1f} "
                f"{measured['shaw']:>8.1f} {measured['shaw'] / base:>6.2f} "
                f"{terms_text:>8} {measured['one_hot']:>8.1f} "
                f"{measured['one_hot'] / base:>6.2f} {measured['naive']:>8.1f} "
                f"{measured['naive'] / base:>6.2f}"
            )


if __name__ == "__main__":
    main()

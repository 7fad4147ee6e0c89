"""`shaw_attention` (written-out gradient) against autodiff of the reference."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_posenc
from keras_posenc.utils import attention as attention_module
from keras_posenc.utils.attention import shaw_attention
from keras_posenc.utils.masks import MASKED_LOGIT
from tests.utils.test_attention import gradients
from tests.utils.test_attention import random_arrays

BATCH, QUERY, KEY, HEADS, KEY_DIM, MAX_DISTANCE = 2, 5, 7, 3, 4, 2
SCALE = 0.5


def reference_shaw_attention(query, key, value, key_table, value_table, index, mask):
    """Shaw attention by `take_along_axis` and a one-hot einsum, autodiffed."""
    buckets = key_table.shape[0]
    head_index = index[None, None] if len(index.shape) == 2 else index[:, None]
    logits = ops.einsum("btnh,bsnh->bnts", query, key) + ops.take_along_axis(
        ops.einsum("btnh,rh->bntr", query, key_table), head_index, axis=-1
    )
    logits = logits * SCALE
    if mask is not None:
        logits = ops.where(mask[:, None], logits, MASKED_LOGIT)
    weights = ops.softmax(logits, axis=-1)
    one_hot = ops.one_hot(head_index[:, 0], buckets, dtype=weights.dtype)
    bucket_weights = ops.einsum("bnts,btsr->bntr", weights, one_hot)
    return ops.einsum("bnts,bsnh->btnh", weights, value) + ops.einsum(
        "bntr,rh->btnh", bucket_weights, value_table
    )


def bucket_index(query_positions, key_positions):
    distance = key_positions[..., None, :] - query_positions[..., :, None]
    return (np.clip(distance, -MAX_DISTANCE, MAX_DISTANCE) + MAX_DISTANCE).astype(
        "int32"
    )


MASKS = {
    "none": None,
    # Example 1: 4 keys, and its last query padding (a fully masked row).
    "padding": (np.arange(KEY)[None, None] < np.array([7, 4])[:, None, None])
    & (np.arange(QUERY)[None, :, None] < np.array([5, 4])[:, None, None]),
    "causal": np.arange(KEY)[None, None] <= np.arange(QUERY)[None, :, None] + 2,
}


@pytest.mark.parametrize(
    "mask, per_example", [("none", False), ("padding", True), ("causal", False)]
)
def test_outputs_and_gradients_match_reference(mask, per_example):
    arrays, weights = random_arrays(
        (
            (BATCH, QUERY, HEADS, KEY_DIM),
            (BATCH, KEY, HEADS, KEY_DIM),
            (BATCH, KEY, HEADS, KEY_DIM),
            (2 * MAX_DISTANCE + 1, KEY_DIM),
            (2 * MAX_DISTANCE + 1, KEY_DIM),
        ),
        (BATCH, QUERY, HEADS, KEY_DIM),
    )
    if per_example:
        # Left padding: each example's positions start elsewhere.
        query_positions = np.arange(QUERY)[None] + np.array([[2], [0]]) - 2
        index = bucket_index(query_positions, np.arange(KEY)[None] - [[0], [2]])
    else:
        index = bucket_index(np.arange(QUERY) + 2, np.arange(KEY))
    mask = MASKS[mask]

    def fast(*args):
        return shaw_attention(*args, ops.convert_to_tensor(index), SCALE, mask=mask)

    def reference(*args):
        index_3d = np.broadcast_to(index, (BATCH, QUERY, KEY))
        return reference_shaw_attention(*args, ops.convert_to_tensor(index_3d), mask)

    np.testing.assert_allclose(
        ops.convert_to_numpy(fast(*arrays)),
        ops.convert_to_numpy(reference(*arrays)),
        rtol=1e-5,
        atol=1e-5,
    )
    names = ("query", "key", "value", "key_table", "value_table")
    for name, got, want in zip(
        names, gradients(fast, arrays, weights), gradients(reference, arrays, weights)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_layer_route_matches_reference(monkeypatch):
    """The whole attention layer, causal and padded, on either route."""
    attention = keras_posenc.layers.PositionalMultiHeadAttention(
        num_heads=HEADS,
        key_dim=KEY_DIM,
        position=keras_posenc.layers.RelativePositionEmbedding(max_distance=2),
    )
    x = np.random.default_rng(1).standard_normal((BATCH, QUERY, 8)).astype("float32")
    query_mask = np.array([[True] * QUERY, [True] * (QUERY - 2) + [False] * 2])
    attention.build(x.shape)
    variables = attention.trainable_variables
    values = [ops.convert_to_numpy(variable.value) for variable in variables]
    weights = np.random.default_rng(2).standard_normal((BATCH, QUERY, 8))
    weights = weights.astype("float32")
    position = attention.position_layer
    calls = []
    original = position.compute_attention

    def counted(*args, **kwargs):
        output = original(*args, **kwargs)
        calls.append(output is not None)
        return output

    monkeypatch.setattr(position, "compute_attention", counted)

    def layer_results(backends):
        monkeypatch.setattr(attention_module, "SHAW_ATTENTION_BACKENDS", backends)

        def function(*tables):
            with keras.StatelessScope(state_mapping=list(zip(variables, tables))):
                return attention(
                    x,
                    x,
                    query_mask=query_mask,
                    value_mask=query_mask,
                    use_causal_mask=True,
                )

        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            output = ops.convert_to_numpy(function(*values))
        return output, gradients(function, values, weights)

    fast_output, fast = layer_results((keras.config.backend(),))
    assert calls and all(calls)
    calls.clear()
    reference_output, reference = layer_results(())
    assert calls and not any(calls)
    np.testing.assert_allclose(fast_output, reference_output, rtol=1e-5, atol=1e-5)
    for variable, got, want in zip(variables, fast, reference):
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-5, err_msg=variable.path
        )

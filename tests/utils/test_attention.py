"""The fast biased-attention route against `keras.ops.dot_product_attention`."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_posenc
from keras_posenc.utils.attention import biased_attention
from keras_posenc.utils.attention import einsum_biased_attention
from keras_posenc.utils.attention import reference_biased_attention

# jax.nn.dot_product_attention (the reference on JAX) needs value_dim == key_dim.
BATCH, QUERY, KEY, HEADS, KEY_DIM, VALUE_DIM = 2, 5, 7, 3, 4, 4
SCALE = 0.5


def gradients(function, arrays, weights):
    """Gradients of `sum(function(*arrays) * weights)` for every array."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(*args):
            return jax.numpy.sum(function(*args) * weights)

        grads = jax.grad(loss, argnums=tuple(range(len(arrays))))(*arrays)
    elif backend == "tensorflow":
        import tensorflow as tf

        arrays = [tf.convert_to_tensor(array) for array in arrays]
        with tf.GradientTape() as tape:
            tape.watch(arrays)
            loss = tf.reduce_sum(function(*arrays) * weights)
        grads = tape.gradient(loss, arrays)
    else:
        import torch

        arrays = [torch.tensor(array, requires_grad=True) for array in arrays]
        loss = (function(*arrays) * ops.convert_to_tensor(weights)).sum()
        grads = torch.autograd.grad(loss, arrays)
    return [ops.convert_to_numpy(grad) for grad in grads]


def random_arrays(input_shapes, output_shape):
    """Float32 inputs, and weights of the output for a scalar loss."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype("float32") for shape in input_shapes]
    weights = rng.standard_normal(output_shape).astype("float32")
    return arrays, weights


def random_inputs(bias_shape):
    return random_arrays(
        (
            (BATCH, QUERY, HEADS, KEY_DIM),
            (BATCH, KEY, HEADS, KEY_DIM),
            (BATCH, KEY, HEADS, VALUE_DIM),
            bias_shape,
        ),
        (BATCH, QUERY, HEADS, VALUE_DIM),
    )


@pytest.mark.parametrize(
    "bias_shape",
    [
        (1, HEADS, QUERY, KEY),
        (BATCH, HEADS, QUERY, KEY),
        (BATCH, 1, QUERY, KEY),
        (1, 1, QUERY, KEY),
    ],
)
@pytest.mark.parametrize(
    "route", [einsum_biased_attention, biased_attention], ids=["einsum", "dispatch"]
)
def test_route_equals_reference_outputs_and_gradients(route, bias_shape):
    arrays, weights = random_inputs(bias_shape)

    def reference(*args):
        return reference_biased_attention(*args, SCALE)

    def fast(*args):
        return route(*args, SCALE)

    np.testing.assert_allclose(
        ops.convert_to_numpy(fast(*arrays)),
        ops.convert_to_numpy(reference(*arrays)),
        rtol=1e-5,
        atol=1e-5,
    )
    expected = gradients(reference, arrays, weights)
    for name, got, want in zip(
        ("query", "key", "value", "bias"), gradients(fast, arrays, weights), expected
    ):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_masked_bias_rows_match_reference():
    # The attention layer folds masks into the bias as a large negative value.
    arrays, weights = random_inputs((BATCH, HEADS, QUERY, KEY))
    arrays[3][:, :, :, -2:] = -3e4

    def reference(*args):
        return reference_biased_attention(*args, SCALE)

    def fast(*args):
        return einsum_biased_attention(*args, SCALE)

    for got, want in zip(
        gradients(fast, arrays, weights), gradients(reference, arrays, weights)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("position", ["t5", "kerple", "fire", "forgetting"])
def test_learned_bias_weight_gradients_match_reference(position, monkeypatch):
    """The whole layer, its scheme's weights included, on either route."""
    from keras_posenc.layers import positional_multi_head_attention as module

    attention = keras_posenc.layers.PositionalMultiHeadAttention(
        num_heads=HEADS, key_dim=KEY_DIM, position=position
    )
    x = np.random.default_rng(1).standard_normal((BATCH, QUERY, 8)).astype("float32")
    attention.build(x.shape)
    variables = attention.trainable_variables
    values = [ops.convert_to_numpy(variable.value) for variable in variables]
    weights = np.random.default_rng(2).standard_normal((BATCH, QUERY, 8))
    weights = weights.astype("float32")

    def layer_gradients(route):
        monkeypatch.setattr(module, "biased_attention", route)

        def function(*tables):
            with keras.StatelessScope(state_mapping=list(zip(variables, tables))):
                return attention(x, x, use_causal_mask=True)

        return gradients(function, values, weights)

    fast = layer_gradients(einsum_biased_attention)
    reference = layer_gradients(reference_biased_attention)
    for variable, got, want in zip(variables, fast, reference):
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-5, err_msg=variable.path
        )

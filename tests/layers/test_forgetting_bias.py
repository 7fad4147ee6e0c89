"""ForgettingBias (FoX): the formula, the cache and the harness."""

import keras
import numpy as np

from keras_posenc import layers
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test

HEADS, HEAD_DIM, WIDTH = 2, 4, 8


def _inputs(length=6, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, length, WIDTH)).astype("float32")


def _reference_attention(attention, x, causal=True):
    """FoX attention in float64 from the layer's own weights (Lin et al. 2025).

    `softmax(q k^T / sqrt(d) + D)` with `D_ij = sum_{l=j+1..i} log f_l` for
    `j <= i` (the paper's eq. 3, a causal mask beyond), or the sum over the
    tokens between `i` and `j` either way without the mask.
    """

    def weights(dense):
        return [to_numpy(w).astype("float64") for w in dense.weights]

    (wq, bq), (wk, bk), (wv, bv) = (
        weights(attention.query_dense),
        weights(attention.key_dense),
        weights(attention.value_dense),
    )
    wo, bo = weights(attention.output_dense)
    gate = attention.position_layer
    wf, bf = to_numpy(gate.gate_kernel), to_numpy(gate.gate_bias)
    x = x.astype("float64")
    q = np.einsum("btd,dhk->bthk", x, wq) + bq
    k = np.einsum("btd,dhk->bthk", x, wk) + bk
    v = np.einsum("btd,dhk->bthk", x, wv) + bv
    log_f = -np.log1p(np.exp(-(x @ wf + bf)))  # (b, t, h)
    cumulative = np.cumsum(log_f, axis=1).transpose(0, 2, 1)  # (b, h, t)
    length = x.shape[1]
    decay = np.zeros((x.shape[0], HEADS, length, length))
    for i in range(length):
        for j in range(length):
            low, high = min(i, j), max(i, j)
            decay[:, :, i, j] = np.sum(log_f[:, low + 1 : high + 1], axis=1)
    # The sum equals c_i - c_j on and below the diagonal.
    lower = np.tril(np.ones((length, length), bool))
    np.testing.assert_allclose(
        decay[..., lower],
        (cumulative[..., :, None] - cumulative[..., None, :])[..., lower],
        atol=1e-9,
    )
    logits = np.einsum("bihk,bjhk->bhij", q, k) / np.sqrt(HEAD_DIM) + decay
    if causal:
        logits = np.where(lower, logits, -np.inf)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    output = np.einsum("bhij,bjhk->bihk", probabilities, v)
    return np.einsum("bihk,hkd->bid", output, wo) + bo


def _attention(**kwargs):
    return layers.PositionalMultiHeadAttention(
        num_heads=HEADS, key_dim=HEAD_DIM, position="forgetting", **kwargs
    )


def test_matches_the_paper_formula_causal_and_bidirectional():
    x = _inputs()
    attention = _attention()
    attention(x, x)
    # A larger gate kernel than at initialization: gates far from 1 and 0.5.
    gate = attention.position_layer
    gate.gate_kernel.assign(np.random.default_rng(1).normal(size=(WIDTH, HEADS)))
    gate.gate_bias.assign(np.array([0.5, 2.0]))
    for causal in (True, False):
        expected = _reference_attention(attention, x, causal=causal)
        actual = to_numpy(attention(x, x, use_causal_mask=causal))
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)
        # The explicit (non-fused) path agrees.
        actual, _ = attention(
            x, x, use_causal_mask=causal, return_attention_scores=True
        )
        np.testing.assert_allclose(to_numpy(actual), expected, atol=1e-5, rtol=1e-5)


def test_cached_decoding_equals_full_decoding():
    x = _inputs(length=7)
    attention = _attention()
    full = to_numpy(attention(x, x, use_causal_mask=True))
    assert attention.cache_entries == 3
    cache = keras.ops.zeros((2, 3, 7, HEADS, HEAD_DIM))
    outputs = []
    # A 3-token prompt at a Python index, then steps at tensor indices.
    for start, stop in ((0, 3), (3, 4), (4, 6), (6, 7)):
        index = start if start == 0 else keras.ops.convert_to_tensor(start, "int32")
        chunk = x[:, start:stop]
        output, cache = attention(
            chunk, chunk, use_causal_mask=True, cache=cache, cache_update_index=index
        )
        outputs.append(to_numpy(output))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, atol=1e-5)
    # The third entry holds each slot's log forget gate in channel 0.
    log_f = to_numpy(attention.position_layer.compute_token_state(x))
    np.testing.assert_allclose(to_numpy(cache)[:, 2, :, :, 0], log_f, atol=1e-6)


def test_right_padding_does_not_reach_real_tokens():
    x = _inputs()
    mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    attention = _attention()
    padded = to_numpy(
        attention(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True)
    )
    alone = to_numpy(attention(x[1:, :4], x[1:, :4], use_causal_mask=True))
    np.testing.assert_allclose(padded[1, :4], alone[0], atol=1e-5)


def test_standalone_layer_harness(tmp_path):
    run_layer_test(
        layers.ForgettingBias,
        init_kwargs={"num_heads": HEADS},
        input_data=_inputs(),
        expected_output_shape=(2, HEADS, 6, 6),
        expected_num_trainable_weights=2,
        tmp_path=tmp_path,
    )


def test_initializers_round_trip():
    layer = layers.ForgettingBias(
        num_heads=HEADS,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(4.0),
    )
    clone = layers.ForgettingBias.from_config(layer.get_config())
    bias = to_numpy(clone(_inputs()))
    # Every gate is sigmoid(4): a decay of log sigmoid(4) = -0.018 per token.
    distance = np.abs(np.arange(6)[:, None] - np.arange(6)[None, :])
    expected = distance * np.log(1 / (1 + np.exp(-4.0)))
    np.testing.assert_allclose(
        bias[0], np.broadcast_to(expected, (HEADS, 6, 6)), atol=1e-5
    )

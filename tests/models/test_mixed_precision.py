"""Ready models under `mixed_bfloat16`: float32 outputs, cached decoding.

Keras' mixed-precision guide keeps a model's final outputs in float32; the
output layers (and the final normalization and dropout that feed them)
compute in float32 under any 16-bit policy. Cached and uncached greedy
decoding run the same layers in different shapes, so under bfloat16 compute
they round differently; they may then pick different tokens only where the
two best logits are within that rounding (the documented tie rule).
"""

import keras
import numpy as np
from keras import ops

from keras_posenc import models

TINY = dict(
    vocabulary_size=20,
    max_length=16,
    hidden_dim=16,
    num_layers=2,
    num_heads=2,
    intermediate_dim=16,
    dtype="mixed_bfloat16",
)
IDS = np.array([[1, 2, 3, 0], [4, 5, 6, 7]], "int32")
# bfloat16 keeps 8 bits of mantissa: hidden states of size ~1 round by up to
# ~0.004, which moves logits of these models by about as much.
BFLOAT16_TIE = 0.02


def dtype_of(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def test_outputs_are_float32():
    classifier = models.TransformerClassifier(num_classes=3, **TINY)
    probabilities = classifier(IDS)
    assert dtype_of(probabilities) == "float32"
    assert classifier.predict(IDS, verbose=0).dtype == np.float32
    np.testing.assert_allclose(
        ops.convert_to_numpy(probabilities).sum(-1), 1.0, atol=1e-6
    )
    assert dtype_of(models.TransformerLM(**TINY)(IDS)) == "float32"
    seq2seq = models.Seq2SeqTransformer(**TINY)
    inputs = {"encoder_token_ids": IDS, "decoder_token_ids": IDS}
    assert dtype_of(seq2seq(inputs)) == "float32"
    # The blocks still compute in bfloat16.
    block = seq2seq.decoder_layers[0]
    assert block.compute_dtype == "bfloat16"
    assert seq2seq.logits_dense.compute_dtype == "float32"
    revived = models.Seq2SeqTransformer.from_config(seq2seq.get_config())
    assert revived.logits_dense.compute_dtype == "float32"


def test_cached_and_uncached_greedy_decoding_differ_only_at_bfloat16_ties():
    keras.utils.set_random_seed(5)
    lm = models.TransformerLM(**TINY)
    rng = np.random.default_rng(0)
    prompt = np.zeros((8, 6), "int32")
    for row, length in enumerate(rng.integers(1, 6, size=8)):
        prompt[row, :length] = rng.integers(1, 20, size=length)
    cached = lm.generate(prompt, max_length=16, use_cache=True)
    uncached = lm.generate(prompt, max_length=16, use_cache=False)
    agree = 0
    for row in range(len(prompt)):
        differ = np.flatnonzero(cached[row] != uncached[row])
        if not differ.size:
            agree += 1
            continue
        column = differ[0]
        logits = ops.convert_to_numpy(lm(cached[row : row + 1, :column]))[0, -1]
        picked = sorted([logits[cached[row, column]], logits[uncached[row, column]]])
        assert picked[1] - picked[0] < BFLOAT16_TIE, (row, column, picked)
        assert picked[1] >= np.sort(logits)[-2] - BFLOAT16_TIE
    assert agree >= len(prompt) // 2

"""`generate(no_repeat_ngram_size=n)`: no n-gram occurs twice in an output."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc.models import Seq2SeqTransformer
from keras_posenc.models import TransformerLM
from keras_posenc.models.generation import ban_repeated_ngrams
from keras_posenc.utils import to_numpy
from keras_posenc.utils.masks import MASKED_LOGIT


def _banned_reference(token_ids, index, n):
    """The ids a loop over the earlier n-grams bans, one set per row."""
    banned = []
    for row in token_ids:
        prefix = list(row[index - n + 1 : index]) if n > 1 else []
        banned.append(
            {
                int(row[start + n - 1])
                for start in range(index - n + 1)
                if list(row[start : start + n - 1]) == prefix
            }
        )
    return banned


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ban_repeated_ngrams_matches_a_loop(n):
    rng = np.random.default_rng(n)
    # Few distinct ids, so that n-grams repeat often.
    token_ids = rng.integers(1, 4, size=(6, 10)).astype("int32")
    logits = rng.normal(size=(6, 5)).astype("float32")
    for index in range(0, 10):
        masked = to_numpy(
            ban_repeated_ngrams(
                ops.convert_to_tensor(logits),
                ops.convert_to_tensor(token_ids),
                ops.convert_to_tensor(index, "int32"),
                n,
            )
        )
        for row, banned in enumerate(_banned_reference(token_ids, index, n)):
            expected = logits[row].copy()
            expected[sorted(banned | {0})] = MASKED_LOGIT  # 0: padding, always
            np.testing.assert_array_equal(masked[row], expected, f"{index=} {row=}")


def _has_repeated_ngram(row, n):
    ngrams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
    return len(ngrams) != len(set(ngrams))


def test_generate_without_repeated_ngrams_cached_equals_uncached():
    keras.utils.set_random_seed(0)
    lm = TransformerLM(
        vocabulary_size=12, max_length=16, hidden_dim=16, num_layers=1,
        num_heads=2, intermediate_dim=32, position="rotary",
    )  # fmt: skip
    prompts = np.array([[3, 4, 5], [6, 7, 0]], "int32")
    # An untrained model loops on a few ids; the guard must break the loops.
    plain = lm.generate(prompts, max_length=16)
    assert any(_has_repeated_ngram(row, 2) for row in plain)
    for sampler in ("greedy", "beam"):
        guarded = lm.generate(prompts, 16, sampler=sampler, no_repeat_ngram_size=2)
        for row in guarded:
            assert not _has_repeated_ngram(row[row != 0], 2), row
        uncached = lm.generate(
            prompts, 16, sampler=sampler, no_repeat_ngram_size=2, use_cache=False
        )
        np.testing.assert_array_equal(guarded, uncached)

    seq2seq = Seq2SeqTransformer(
        vocabulary_size=12, max_length=12, hidden_dim=16, num_layers=1,
        num_heads=2, intermediate_dim=32, position="t5",
    )  # fmt: skip
    summaries = seq2seq.generate(prompts, max_length=12, no_repeat_ngram_size=1)
    for row in summaries:
        assert len(set(row.tolist())) == len(row), row

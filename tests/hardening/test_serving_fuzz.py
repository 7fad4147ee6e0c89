"""Serving fuzz: the exported SavedModels answer 1,000 random unicode strings.

Three tiny untrained models (a `TransformerClassifier`, a chatbot-style
`TransformerLM` and a `Seq2SeqTransformer` summarizer) are exported with
`export_for_serving`, loaded with `tf.saved_model.load` and each called ONCE on
the same batch of 1,000 strings from a fixed-seed generator: empty strings,
control characters, zero-width and lone combining marks, random code points
from every plane (no surrogates: UTF-8 cannot encode them), emoji, RTL text,
whitespace only, strings of 100,000+ bytes and bytes that are not valid UTF-8.
The outputs must have the right shape and dtype, the probabilities be finite
and sum to 1, the labels be label names and the generated text valid UTF-8;
invalid UTF-8 is served exactly like its twin in the batch, Python's
`bytes.decode("utf-8", errors="replace")` (the export transcodes with U+FFFD,
so a gRPC client's raw bytes never fail the request); a sample of the batch
(the 100 KB strings, cut like training data, included) equals the in-memory
model's output. Non-string inputs and other ranks are refused with an error
that asks for a string tensor (of shape (None,), where the rank is wrong).

(`tests/test_export.py` covers the fresh-process loading route with trained
models; this file loads in the test process.)
"""

import random

import keras
import numpy as np
import pytest

import keras_posenc
from keras_posenc import preprocessing
from keras_posenc.export import export_for_serving
from tests.hardening.counts import record
from tests.test_export import _small
from tests.test_export import _tokenizer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow", reason="runs in the TensorFlow pass"
    ),
]

BATCH_SIZE = 1000
LABEL_NAMES = ["animals", "money", "other"]
LM_MAX_LENGTH, LM_PROMPT_LENGTH = 10, 5
SUMMARY_SOURCE_LENGTH, SUMMARY_MAX_LENGTH = 12, 6

CONTROL = ["\x00", "\x01", "\x07", "\x08", "\t", "\n", "\x0b", "\x0c", "\r"]
CONTROL += ["\x1b", "\x1b[31m", "\x7f", "\x85", "\u200b", "\u200c", "\u200d"]
CONTROL += ["\u2028", "\u2029", "\ufeff", "\ufffd", "\ufffe", "\uffff"]
COMBINING = ["\u0300", "\u0301", "\u0308", "\u0327", "\u20dd", "\u0489", "\u1ab0"]
WHITESPACE = [" ", "\t", "\n", "\r\n", "\u00a0", "\u1680", "\u2003", "\u3000"]
BIDI = ["\u200e", "\u200f", "\u202a", "\u202b", "\u202d", "\u202e", "\u2066"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "❤️", "🧑🏿‍🚀", "1️⃣", "🫠"]
WORDS = ["the", "cat", "sat", "on", "mat", "shares", "rose", "bank", "hello"]
# Not valid UTF-8: a lone continuation byte, 0xff/0xfe, a truncated sequence,
# an overlong "/", an encoded surrogate, a code point above U+10FFFF.
INVALID_UTF8 = [
    b"\x80",
    b"\xff\xfe",
    b"the cat \xc3",
    b"\xc0\xaf etc",
    b"\xed\xa0\x80 surrogate",
    b"\xf4\x90\x80\x80 too high",
    b"shares \xe2\x82 rose \xff",
    b"\xf0\x9f\x98",
]
HUNDRED_KB = 100_000


def _code_point(rng):
    """A random code point from one of the planes, never a surrogate."""
    plane = rng.choice(["ascii", "bmp", "bmp", "smp", "sip", "high"])
    low, high = {
        "ascii": (0x00, 0x7F),
        "bmp": (0x80, 0xFFFF),
        "smp": (0x10000, 0x1FFFF),
        "sip": (0x20000, 0x3FFFF),
        "high": (0x40000, 0x10FFFF),  # mostly unassigned and private use
    }[plane]
    while True:
        point = rng.randint(low, high)
        if not 0xD800 <= point <= 0xDFFF:
            return chr(point)


def _random_text(rng):
    kind = rng.choice(
        ["code_points", "control", "combining", "emoji", "rtl", "whitespace"]
        + ["mixed", "mixed", "cjk"]
    )
    length = rng.choice([1, 2, 5, 20, 80, 300])
    if kind == "code_points":
        return "".join(_code_point(rng) for _ in range(length))
    if kind == "control":
        return "".join(rng.choice(CONTROL + WORDS) for _ in range(length))
    if kind == "combining":  # lone combining marks, at the start or in a row
        return "".join(rng.choice(COMBINING + [" ", "a"]) for _ in range(length))
    if kind == "emoji":
        return "".join(rng.choice(EMOJI + [" "]) for _ in range(length))
    if kind == "rtl":
        letters = [chr(rng.randint(0x05D0, 0x05EA)) for _ in range(length)]
        letters += [chr(rng.randint(0x0621, 0x064A)) for _ in range(length)]
        rng.shuffle(letters)
        return rng.choice(BIDI) + " ".join(letters) + rng.choice(BIDI + WORDS)
    if kind == "whitespace":
        return "".join(rng.choice(WHITESPACE) for _ in range(length))
    if kind == "cjk":
        return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(length))
    pieces = WORDS + CONTROL + COMBINING + EMOJI + WHITESPACE
    return " ".join(rng.choice(pieces) + _code_point(rng) for _ in range(length))


def _fuzz_batch():
    """1,000 `bytes` (UTF-8, or deliberately not) and the `str` each stands for.

    The `str` of an invalid UTF-8 item is its decoding with U+FFFD for each
    invalid sequence, what the export promises to serve it as.
    """
    rng = random.Random(20250607)
    texts = ["", "", " ", "\x00", "\x00" * 64, "\t\r\n", "\u200b", "\u0301"]
    texts += ["\u0301cat", "\x1b[31mthe cat\x1b[0m", "\U0010ffff", "\U000e0001"]
    texts += ["the cat sat on the mat", "مرحبا بالعالم", "שלום עולם", "😀" * 10]
    # Strings of 100,000+ bytes: words, random code points, one endless word,
    # whitespace and NUL bytes.
    long_words = " ".join(rng.choice(WORDS) for _ in range(HUNDRED_KB // 4))
    texts.append(long_words)
    texts.append("".join(_code_point(rng) for _ in range(HUNDRED_KB // 2)))
    texts.append("x" * HUNDRED_KB)
    texts.append(" \u3000" * (HUNDRED_KB // 4))
    texts.append(("\x00" * 999 + "cat ") * (HUNDRED_KB // 1000))
    items = [text.encode("utf-8") for text in texts]
    # Each invalid item, then its twin: the valid UTF-8 of its replacement.
    for item in INVALID_UTF8:
        replaced = item.decode("utf-8", errors="replace")
        items += [item, replaced.encode("utf-8")]
        texts += [replaced, replaced]
    while len(items) < BATCH_SIZE:
        text = _random_text(rng)
        texts.append(text)
        items.append(text.encode("utf-8"))
    return items, texts


ITEMS, TEXTS = _fuzz_batch()
INVALID_INDICES = [ITEMS.index(item) for item in INVALID_UTF8]
LONG_INDICES = [i for i, item in enumerate(ITEMS) if len(item) >= HUNDRED_KB]


def _sample_indices():
    """Compared with the in-memory models: the hand-written valid strings
    (the long ones included, where truncation shows) and 12 random ones."""
    first_random = INVALID_INDICES[-1] + 2
    special = [i for i in range(first_random) if i not in INVALID_INDICES]
    rng = random.Random(3)
    return special + rng.sample(range(first_random, BATCH_SIZE), 12)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Exports and loads the three models; serves the fuzz batch to each once."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 (registers the tokenizer's ops)

    keras.utils.set_random_seed(11)
    root = tmp_path_factory.mktemp("fuzz_models")
    tokenizer = _tokenizer()
    vocabulary_size = tokenizer.vocabulary_size()
    models = {
        "classifier": keras_posenc.models.TransformerClassifier(
            vocabulary_size=vocabulary_size,
            num_classes=len(LABEL_NAMES),
            position="sinusoidal",
            **_small(),
        ),
        "chatbot": keras_posenc.models.TransformerLM(
            vocabulary_size=vocabulary_size, position="rotary", **_small()
        ),
        "summarizer": keras_posenc.models.Seq2SeqTransformer(
            vocabulary_size=vocabulary_size, position="t5", **_small()
        ),
    }
    options = {
        "classifier": {"label_names": LABEL_NAMES},
        "chatbot": {"max_length": LM_MAX_LENGTH, "max_prompt_length": LM_PROMPT_LENGTH},
        "summarizer": {
            "sequence_length": SUMMARY_SOURCE_LENGTH,
            "max_length": SUMMARY_MAX_LENGTH,
        },
    }
    batch = tf.constant(ITEMS)
    assert batch.shape == (BATCH_SIZE,)
    signatures, outputs = {}, {}
    for name, model in models.items():
        path = export_for_serving(model, tokenizer, root / name / "1", **options[name])
        signature = tf.saved_model.load(path).signatures["serving_default"]
        signatures[name] = signature
        outputs[name] = {
            key: value.numpy() for key, value in signature(text=batch).items()
        }
        record("fuzz strings served", BATCH_SIZE)
    return {
        "tokenizer": tokenizer,
        "models": models,
        "signatures": signatures,
        "outputs": outputs,
    }


def test_fuzz_batch_holds_what_it_promises():
    assert len(ITEMS) == len(TEXTS) == BATCH_SIZE
    assert len(set(ITEMS)) > 950
    assert ITEMS.count(b"") >= 2
    assert len(LONG_INDICES) >= 5
    for item in INVALID_UTF8:
        with pytest.raises(UnicodeDecodeError):
            item.decode("utf-8")
    planes = {ord(c) >> 16 for text in TEXTS for c in text}
    assert {0, 1, 2, 3} <= planes and max(planes) >= 14
    assert not any(0xD800 <= ord(c) <= 0xDFFF for text in TEXTS for c in text)


def test_served_classifier(served):
    outputs = served["outputs"]["classifier"]
    assert set(outputs) == {"probabilities", "label"}
    probabilities, labels = outputs["probabilities"], outputs["label"]
    assert probabilities.shape == (BATCH_SIZE, len(LABEL_NAMES))
    assert probabilities.dtype == np.float32
    assert np.all(np.isfinite(probabilities))
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert labels.shape == (BATCH_SIZE,)
    labels = [label.decode("utf-8") for label in labels.tolist()]
    assert set(labels) <= set(LABEL_NAMES)
    expected_labels = [LABEL_NAMES[i] for i in np.argmax(probabilities, axis=1)]
    assert labels == expected_labels

    # Invalid UTF-8 is served as its U+FFFD replacement, which sits in the
    # same batch as valid UTF-8.
    for index in INVALID_INDICES:
        np.testing.assert_allclose(
            probabilities[index], probabilities[index + 1], atol=1e-6
        )

    sample = _sample_indices()
    ids = preprocessing.encode_texts(served["tokenizer"], [TEXTS[i] for i in sample])
    expected = keras.ops.convert_to_numpy(served["models"]["classifier"](ids))
    np.testing.assert_allclose(probabilities[sample], expected, atol=1e-5)


def _generated_texts(outputs):
    assert set(outputs) == {"generated_text"}
    texts = outputs["generated_text"]
    assert texts.shape == (BATCH_SIZE,)
    assert texts.dtype == object
    # Valid UTF-8 (a strict decode raises otherwise).
    return [text.decode("utf-8") for text in texts.tolist()]


def _assert_invalid_utf8_served_as_replacement(generated):
    for index, item in zip(INVALID_INDICES, INVALID_UTF8):
        assert generated[index] == generated[index + 1], item


def test_served_chatbot(served):
    generated = _generated_texts(served["outputs"]["chatbot"])
    assert any(generated), "nothing was generated"
    _assert_invalid_utf8_served_as_replacement(generated)

    tokenizer = served["tokenizer"]
    sample = _sample_indices()
    prompts = preprocessing.chat_prompts(
        tokenizer, [TEXTS[i] for i in sample], LM_PROMPT_LENGTH
    )
    # A 100 KB prompt keeps its last tokens only.
    assert all(len(prompt) <= LM_PROMPT_LENGTH for prompt in prompts)
    tokens = served["models"]["chatbot"].generate(
        prompts, max_length=LM_MAX_LENGTH, stop_token_id=3
    )
    expected = preprocessing.decode_generated(
        tokenizer, tokens, [len(prompt) for prompt in prompts]
    )
    assert [generated[i] for i in sample] == expected


def test_served_summarizer(served):
    generated = _generated_texts(served["outputs"]["summarizer"])
    assert any(generated), "nothing was generated"
    _assert_invalid_utf8_served_as_replacement(generated)

    tokenizer = served["tokenizer"]
    sample = _sample_indices()
    source = preprocessing.encode_texts(
        tokenizer, [TEXTS[i] for i in sample], SUMMARY_SOURCE_LENGTH
    )
    # `generate()` rejects an empty source; its tensor core serves it.
    tokens = served["models"]["summarizer"].generate_step(
        source, SUMMARY_MAX_LENGTH, start_token_id=2, stop_token_id=3
    )
    expected = preprocessing.decode_generated(
        tokenizer, keras.ops.convert_to_numpy(tokens), 1
    )
    assert [generated[i] for i in sample] == expected


def _bad_inputs():
    import tensorflow as tf

    return {
        "int": (tf.constant([1, 2, 3]), "string tensor"),
        "float": (tf.constant([0.5]), "string tensor"),
        "bool": (tf.constant([True]), "string tensor"),
        "numpy int": (np.array([1, 2]), r"shape=\(None,\), dtype=tf\.string"),
        "scalar": (tf.constant("the cat"), r"string tensor of shape \(None,\)"),
        "2-D": (tf.constant([["the cat", "sat"]]), r"string tensor of shape \(None,\)"),
        "3-D": (tf.fill([2, 1, 2], "cat"), r"string tensor of shape \(None,\)"),
        "empty 2-D": (tf.zeros([0, 3], tf.string), r"string tensor of shape \(None,\)"),
    }


@pytest.mark.parametrize("name", ["classifier", "chatbot", "summarizer"])
def test_non_string_or_wrong_rank_input_is_rejected(served, name):
    import tensorflow as tf

    signature = served["signatures"][name]
    for kind, (value, match) in _bad_inputs().items():
        with pytest.raises(
            (TypeError, ValueError, tf.errors.InvalidArgumentError), match=match
        ) as info:
            signature(text=value)
        assert info.type is not tf.errors.UnknownError, kind
    # An empty batch is a valid batch.
    empty = signature(text=tf.zeros([0], tf.string))
    assert all(value.shape[0] == 0 for value in empty.values())

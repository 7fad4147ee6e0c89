"""`keras_posenc.export.export_for_serving`: SavedModels that serve raw strings.

The slow tests train tiny models on the current backend (our three ready
models and two Keras models of a user's), export them (in a
`KERAS_BACKEND=tensorflow` subprocess unless already on tensorflow), load them
in a fresh TensorFlow process that never imports keras_posenc, and compare the
served outputs with the in-memory models'. See `exported_here()` for which
models each backend's pass exports.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_posenc
from keras_posenc import preprocessing
from keras_posenc.export import export_for_serving
from keras_posenc.export.serving_graph import uncached_generate_step
from keras_posenc.models.generation import get_sampler

LABEL_NAMES = ["animals", "money"]
CLASSIFIER_TEXTS = [
    ("the cat sat on the mat", 0),
    ("a dog ran in the park", 0),
    ("the bird sang in the tree", 0),
    ("my cat chased the dog", 0),
    ("shares rose after strong profits", 1),
    ("the bank cut interest rates", 1),
    ("markets fell as prices rose", 1),
    ("profits at the bank fell", 1),
]
CHATS = [
    ("hello", "hi there"),
    ("how are you", "i am fine"),
    ("what is your name", "my name is bot"),
    ("good night", "sleep well"),
]
SUMMARIES = [
    ("the cat sat on the mat all day", "cat sat"),
    ("the dog ran in the park with a ball", "dog ran"),
    ("shares rose after strong profits at the bank", "shares rose"),
    ("the bird sang in the tree at night", "bird sang"),
]
# Real and awkward inputs: empty, non-ASCII, ~100 KB, control characters
# (a NUL byte ends a string for TF-text's ops, so the export replaces it).
SERVED_TEXTS = [
    "the cat sat on the mat",
    "shares rose at the bank",
    "how are you",
    "",
    "héllo wörld ☃ 日本語 😀",
    "the dog ran in the park " * 4200,
    "\x00\x07\t\n\r cat\x00dog \x1b[31m",
]
SEQUENCE_LENGTH = 16

LOADER = r"""
import json
import sys

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401 (registers the tokenizer's ops)

request = json.load(open(sys.argv[1], encoding="utf-8"))
texts = request["texts"]
results = {}
for name, path in request["paths"].items():
    served = tf.saved_model.load(path)
    function = served.signatures["serving_default"]
    inputs = function.structured_input_signature[1]
    outputs = function(text=tf.constant(texts))
    # Invalid UTF-8 (possible over gRPC) must not fail the request.
    awkward = function(text=tf.constant([b"\xff\xfe bad \xc3", b"\x00"]))
    result = {
        "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in inputs.items()},
        "outputs": {
            k: [v.dtype.name, list(v.shape)] for k, v in outputs.items()
        },
        "awkward_shapes": {k: list(v.shape) for k, v in awkward.items()},
    }
    for key, value in outputs.items():
        value = value.numpy()
        if value.dtype == object:
            result[key] = [item.decode("utf-8") for item in value.tolist()]
        else:
            result[key] = value.tolist()
            result[key + "_finite"] = bool(np.all(np.isfinite(value)))
    results[name] = result
results["imported_keras_posenc"] = any(
    module.startswith("keras_posenc") for module in sys.modules
)
json.dump(results, open(sys.argv[2], "w", encoding="utf-8"))
"""


def _tokenizer():
    texts = [text for text, _ in CLASSIFIER_TEXTS]
    texts += [text for pair in CHATS + SUMMARIES for text in pair]
    # Repeated, so that the vocabulary learner keeps whole words.
    return keras_posenc.tokenizers.fit_word_piece_tokenizer(
        texts * 20, vocabulary_size=400, sequence_length=SEQUENCE_LENGTH
    )


def _small(**kwargs):
    config = dict(
        max_length=SEQUENCE_LENGTH,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        dropout=0.0,
    )
    config.update(kwargs)
    return config


def _fit(model, x, y, epochs):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=not isinstance(model, keras_posenc.models.TransformerClassifier)
        ),
    )
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
    return model


def _run(command, **kwargs):
    environment = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, **kwargs
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _served_classifier(tokenizer, root):
    classifier = keras_posenc.models.TransformerClassifier(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_classes=2,
        position="rotary",
        **_small(),
    )
    texts, labels = zip(*CLASSIFIER_TEXTS)
    _fit(
        classifier,
        preprocessing.encode_texts(tokenizer, texts),
        np.array(labels),
        epochs=10,
    )
    path = export_for_serving(
        classifier, tokenizer, root / "news_classifier" / "1", label_names=LABEL_NAMES
    )
    expected = keras.ops.convert_to_numpy(
        classifier(preprocessing.encode_texts(tokenizer, SERVED_TEXTS))
    )
    return path, expected


def _chat_rows(tokenizer):
    return preprocessing.chat_sequences(
        tokenizer, *zip(*CHATS), sequence_length=SEQUENCE_LENGTH, max_prompt_length=6
    )


def _served_chatbot(tokenizer, root):
    lm = keras_posenc.models.TransformerLM(
        vocabulary_size=tokenizer.vocabulary_size(), position="alibi", **_small()
    )
    rows = _chat_rows(tokenizer)
    _fit(lm, rows[:, :-1], rows[:, 1:], epochs=30)
    path = export_for_serving(
        lm, tokenizer, root / "chatbot" / "1", max_prompt_length=6
    )
    prompts = preprocessing.chat_prompts(tokenizer, SERVED_TEXTS, 6)
    generated = lm.generate(prompts, stop_token_id=3)
    expected = preprocessing.decode_generated(
        tokenizer, generated, [len(prompt) for prompt in prompts]
    )
    return path, expected


def _served_summarizer(tokenizer, root):
    seq2seq = keras_posenc.models.Seq2SeqTransformer(
        vocabulary_size=tokenizer.vocabulary_size(), position="t5", **_small()
    )
    encoder_ids, decoder_ids = preprocessing.summarization_sequences(
        tokenizer, *zip(*SUMMARIES), encoder_length=12, decoder_length=8
    )
    _fit(
        seq2seq,
        {"encoder_token_ids": encoder_ids, "decoder_token_ids": decoder_ids[:, :-1]},
        decoder_ids[:, 1:],
        epochs=30,
    )
    # Served with the repetition guard, which the in-memory step applies too.
    path = export_for_serving(
        seq2seq,
        tokenizer,
        root / "summarizer" / "1",
        sequence_length=12,
        max_length=8,
        no_repeat_ngram_size=3,
    )
    # `generate()` rejects an empty source; its tensor core serves it.
    generated = seq2seq.generate_step(
        preprocessing.encode_texts(tokenizer, SERVED_TEXTS, 12),
        8,
        start_token_id=2,
        stop_token_id=3,
        no_repeat_ngram_size=3,
    )
    expected = preprocessing.decode_generated(
        tokenizer, keras.ops.convert_to_numpy(generated), 1
    )
    return path, expected


def _served_user_classifier(tokenizer, root):
    """A user's own Keras classifier, built from keras_posenc layers."""
    token_ids = keras.Input((None,), dtype="int32")
    x = keras_posenc.layers.TokenAndPositionEmbedding(
        tokenizer.vocabulary_size(),
        SEQUENCE_LENGTH,
        16,
        position="sinusoidal",
        mask_zero=True,
    )(token_ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    user_classifier = keras.Model(token_ids, outputs)
    path = export_for_serving(
        user_classifier,
        tokenizer,
        root / "user_classifier" / "1",
        label_names=LABEL_NAMES,
    )
    expected = keras.ops.convert_to_numpy(
        user_classifier(preprocessing.encode_texts(tokenizer, SERVED_TEXTS))
    )
    return path, expected


def _served_user_lm(tokenizer, root):
    """A user's own Keras LM, built from keras_posenc layers."""
    vocabulary_size = tokenizer.vocabulary_size()
    token_ids = keras.Input((None,), dtype="int32")
    x = keras_posenc.layers.TokenAndPositionEmbedding(
        vocabulary_size, SEQUENCE_LENGTH, 16, position="learned", mask_zero=True
    )(token_ids)
    x = keras_posenc.layers.TransformerDecoder(intermediate_dim=32, num_heads=2)(x)
    user_lm = keras.Model(token_ids, keras.layers.Dense(vocabulary_size)(x))
    rows = _chat_rows(tokenizer)
    _fit(user_lm, rows[:, :-1], rows[:, 1:], epochs=30)
    path = export_for_serving(
        user_lm,
        tokenizer,
        root / "user_lm" / "1",
        max_length=SEQUENCE_LENGTH,
        max_prompt_length=6,
    )
    prompts = preprocessing.chat_prompts(tokenizer, SERVED_TEXTS, 6)
    prompt_ids = np.zeros((len(prompts), SEQUENCE_LENGTH), "int32")
    for row, prompt in enumerate(prompts):
        prompt_ids[row, : len(prompt)] = prompt
    generated = uncached_generate_step(
        user_lm,
        keras.ops.convert_to_tensor(prompt_ids),
        SEQUENCE_LENGTH,
        sampler=get_sampler("greedy"),
        stop_token_id=3,
    )
    expected = preprocessing.decode_generated(
        tokenizer,
        keras.ops.convert_to_numpy(generated),
        [len(prompt) for prompt in prompts],
    )
    return path, expected


SERVED_MODELS = {
    "news_classifier": _served_classifier,
    "chatbot": _served_chatbot,
    "summarizer": _served_summarizer,
    "user_classifier": _served_user_classifier,
    "user_lm": _served_user_lm,
}


def exported_here():
    """The served models this backend's pass trains and exports.

    TensorFlow exports all five in process. From JAX and PyTorch every export
    goes through the same `KERAS_BACKEND=tensorflow` subprocess (20-30 s each),
    so the two passes share the five: each model is still exported from
    TensorFlow and from one other backend.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return list(SERVED_MODELS)
    if backend == "jax":
        return ["chatbot", "user_classifier"]
    return ["news_classifier", "summarizer", "user_lm"]


def served_model(served, name):
    """The served and the expected outputs of `name`; skips where not exported."""
    if name not in served["served"]:
        pytest.skip(f"{name} is exported in another backend's pass")
    return served["served"][name], served["expected"][name]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Trains, exports and serves this pass's models; returns what both sides gave."""
    keras.utils.set_random_seed(7)
    root = tmp_path_factory.mktemp("saved_models")
    tokenizer = _tokenizer()
    expected, paths = {}, {}
    for name in exported_here():
        paths[name], expected[name] = SERVED_MODELS[name](tokenizer, root)

    request, response = root / "request.json", root / "response.json"
    request.write_text(json.dumps({"texts": SERVED_TEXTS, "paths": paths}))
    _run([sys.executable, "-c", LOADER, str(request), str(response)])
    return {
        "paths": paths,
        "expected": expected,
        "served": json.loads(response.read_text()),
        "tokenizer": tokenizer,
    }


@pytest.mark.slow
def test_served_classifier_equals_in_memory_model(served):
    result, expected = served_model(served, "news_classifier")
    assert result["inputs"] == {"text": ["string", [None]]}
    assert result["outputs"] == {
        "probabilities": ["float32", [len(SERVED_TEXTS), 2]],
        "label": ["string", [len(SERVED_TEXTS)]],
    }
    assert result["probabilities_finite"]
    assert result["awkward_shapes"] == {"probabilities": [2, 2], "label": [2]}
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.sum(result["probabilities"], axis=1), 1, atol=1e-5)
    assert result["label"] == [LABEL_NAMES[i] for i in np.argmax(expected, axis=1)]
    assert result["label"][:2] == ["animals", "money"], "the model did not train"


@pytest.mark.slow
def test_the_loader_never_imports_keras_posenc(served):
    assert served["served"]["imported_keras_posenc"] is False


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chatbot", "summarizer"])
def test_served_generators_equal_in_memory_models(served, name):
    result, expected = served_model(served, name)
    assert result["inputs"] == {"text": ["string", [None]]}
    assert result["outputs"] == {"generated_text": ["string", [len(SERVED_TEXTS)]]}
    assert result["awkward_shapes"] == {"generated_text": [2]}
    assert result["generated_text"] == expected
    assert any(result["generated_text"]), "nothing was generated"


@pytest.mark.slow
def test_served_user_keras_classifier_equals_in_memory_model(served):
    result, expected = served_model(served, "user_classifier")
    assert result["outputs"] == {
        "probabilities": ["float32", [len(SERVED_TEXTS), 2]],
        "label": ["string", [len(SERVED_TEXTS)]],
    }
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_served_user_keras_lm_equals_in_memory_model(served):
    result, expected = served_model(served, "user_lm")
    assert result["generated_text"] == expected
    # "how are you" was a training prompt: the uncached loop serves its reply.
    assert result["generated_text"][2] == "i am fine"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, prompt, reply",
    [("chatbot", 2, "i am fine"), ("summarizer", 0, "cat sat")],
)
def test_trained_generators_answer_their_training_prompts(served, name, prompt, reply):
    # A training prompt (or source); the tiny model learned its reply.
    result, _ = served_model(served, name)
    assert result["generated_text"][prompt] == reply


@pytest.mark.slow
def test_assets_extra_and_saved_model_cli(served):
    served_model(served, "news_classifier")
    classifier = Path(served["paths"]["news_classifier"])
    extra = classifier / "assets.extra"
    assert (extra / "labels.txt").read_text().split() == LABEL_NAMES
    loaded = keras_posenc.tokenizers.load_tokenizer(extra)
    assert loaded.get_vocabulary() == served["tokenizer"].get_vocabulary()
    for name in ("chatbot", "summarizer", "user_lm"):
        if name in served["paths"]:
            labels = Path(served["paths"][name]) / "assets.extra" / "labels.txt"
            assert not labels.exists()

    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = _run([str(cli), "show", "--all", "--dir", str(classifier)])
    assert "signature_def['serving_default']" in shown
    signature = shown.split("signature_def['serving_default']")[1]
    assert "inputs['text'] tensor_info:\n        dtype: DT_STRING" in signature
    assert "shape: (-1)" in signature
    assert "outputs['label']" in signature and "outputs['probabilities']" in signature


@pytest.fixture(scope="module")
def small_models():
    tokenizer = _tokenizer()
    vocabulary_size = tokenizer.vocabulary_size()
    return tokenizer, {
        "classifier": keras_posenc.models.TransformerClassifier(
            vocabulary_size=vocabulary_size, num_classes=2, **_small()
        ),
        "lm": keras_posenc.models.TransformerLM(
            vocabulary_size=vocabulary_size, **_small()
        ),
        "seq2seq": keras_posenc.models.Seq2SeqTransformer(
            vocabulary_size=vocabulary_size, **_small()
        ),
    }


@pytest.mark.parametrize(
    "model_name, kwargs, match",
    [
        ("classifier", {}, "`label_names`"),
        ("classifier", {"label_names": ["one"]}, "`label_names`"),
        ("classifier", {"label_names": "ab"}, "`label_names`"),
        ("classifier", {"label_names": ["a", ""]}, "`label_names`"),
        ("classifier", {"label_names": ["a", "b"], "max_length": 8}, "`max_length`"),
        ("classifier", {"label_names": ["a", "b"], "sampler": "top_k"}, "`sampler`"),
        (
            "classifier",
            {"label_names": ["a", "b"], "sequence_length": 17},
            "`sequence_length`",
        ),
        ("classifier", {"label_names": ["a", "b"], "path": 3}, "`path`"),
        ("classifier", {"label_names": ["a", "b"], "path": b"x"}, "`path`"),
        ("lm", {"label_names": ["a", "b"]}, "`label_names`"),
        ("lm", {"max_length": 17}, "`max_length`"),
        ("lm", {"max_length": 0}, "`max_length`"),
        ("lm", {"max_prompt_length": 2}, "`max_prompt_length`"),
        ("lm", {"max_prompt_length": 16}, "`max_prompt_length`"),
        ("lm", {"sequence_length": 8}, "`sequence_length`"),
        ("lm", {"sampler": "nucleus"}, "`sampler`"),
        ("lm", {"no_repeat_ngram_size": 0}, "`no_repeat_ngram_size`"),
        (
            "classifier",
            {"label_names": ["a", "b"], "no_repeat_ngram_size": 2},
            "`no_repeat_ngram_size`",
        ),
        ("seq2seq", {"max_length": 1}, "`max_length`"),
        ("seq2seq", {"sequence_length": 0}, "`sequence_length`"),
        ("dense", {}, "`model`"),
        ("lm", {"tokenizer": "vocab.txt"}, "`tokenizer`"),
    ],
)
def test_invalid_arguments(small_models, tmp_path, model_name, kwargs, match):
    tokenizer, models = small_models
    # Not a Keras model at all ("dense": a layer).
    model = models.get(model_name) or keras.layers.Dense(2)
    kwargs = {"tokenizer": tokenizer, "path": str(tmp_path / "model"), **kwargs}
    with pytest.raises(ValueError, match=match):
        export_for_serving(model, **kwargs)


def test_tokenizer_that_does_not_fit_the_model_is_rejected(small_models, tmp_path):
    tokenizer, _ = small_models
    model = keras_posenc.models.TransformerLM(vocabulary_size=10, **_small())
    with pytest.raises(ValueError, match="vocabulary_size=10"):
        export_for_serving(model, tokenizer, str(tmp_path))
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ValueError, match="`path` must be a directory"):
        export_for_serving(
            keras_posenc.models.TransformerLM(
                vocabulary_size=tokenizer.vocabulary_size(), **_small()
            ),
            tokenizer,
            file,
        )


def test_keras_models_that_cannot_be_served_are_named(small_models, tmp_path):
    tokenizer, _ = small_models
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(tokenizer.vocabulary_size(), 8)(ids)
    lm = keras.Model(ids, keras.layers.Dense(tokenizer.vocabulary_size())(x))
    with pytest.raises(ValueError, match="needs `max_length`"):
        export_for_serving(lm, tokenizer, tmp_path)
    pooled = keras.layers.GlobalAveragePooling1D()(x)
    sigmoid = keras.Model(ids, keras.layers.Dense(2, activation="sigmoid")(pooled))
    with pytest.raises(ValueError, match="activation='softmax'"):
        export_for_serving(sigmoid, tokenizer, tmp_path, label_names=["a", "b"])
    four_axes = keras.Model(ids, keras.layers.Reshape((-1, 4, 2))(x))
    with pytest.raises(ValueError, match=r"output has shape \(None, None, 4, 2\)"):
        export_for_serving(four_axes, tokenizer, tmp_path)


def test_classifier_head_must_give_probabilities_or_logits(small_models, tmp_path):
    tokenizer, _ = small_models
    model = keras_posenc.models.TransformerClassifier(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_classes=2,
        activation="sigmoid",
        **_small(),
    )
    with pytest.raises(ValueError, match="activation='softmax'"):
        export_for_serving(model, tokenizer, tmp_path, label_names=["a", "b"])


def test_text_sequences_follow_the_conventions():
    tokenizer = _tokenizer()

    def tokens(ids):
        return [tokenizer.id_to_token(int(i)) for i in ids]

    rows = preprocessing.chat_sequences(
        tokenizer,
        ["what is your name", "hello"],
        ["my name is bot", "hi there"],
        sequence_length=10,
        max_prompt_length=5,
    )
    assert rows.shape == (2, 10) and rows.dtype == np.int32
    # The prompt keeps the last context tokens; the reply is cut at the end.
    assert tokens(rows[0]) == (
        ["[BOS]", "is", "your", "name", "[SEP]", "my", "name", "is", "bot", "[EOS]"]
    )
    assert tokens(rows[1][:6]) == ["[BOS]", "hello", "[SEP]", "hi", "there", "[EOS]"]
    assert list(rows[1][6:]) == [0] * 4

    encoder_ids, decoder_ids = preprocessing.summarization_sequences(
        tokenizer, ["the cat sat on the mat"], ["cat sat"], 4, 6
    )
    assert tokens(encoder_ids[0]) == ["the", "cat", "sat", "on"]
    assert tokens(decoder_ids[0]) == ["[BOS]", "cat", "sat", "[EOS]", "[PAD]", "[PAD]"]

    generated = np.array([[2, 9, 9, 3, 0], [2, 3, 0, 0, 0]])
    generated[0, 1:3] = tokenizer.token_to_id("cat"), tokenizer.token_to_id("sat")
    assert preprocessing.decode_generated(tokenizer, generated, 1) == ["cat sat", ""]

    with pytest.raises(ValueError, match="`replies`"):
        preprocessing.chat_sequences(tokenizer, ["a"], "b", sequence_length=8)
    with pytest.raises(ValueError, match="`max_prompt_length`"):
        preprocessing.chat_sequences(
            tokenizer, ["a"], ["b"], sequence_length=8, max_prompt_length=8
        )
    with pytest.raises(ValueError, match="same length"):
        preprocessing.summarization_sequences(tokenizer, ["a", "b"], ["c"], 4, 4)

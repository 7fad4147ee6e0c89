import json
import os
import subprocess
import sys
import tempfile

import keras

from keras_posenc.export import serving_graph
from keras_posenc.models.generation import check_no_repeat_ngram_size
from keras_posenc.models.generation import get_sampler
from keras_posenc.models.seq2seq_transformer import Seq2SeqTransformer
from keras_posenc.models.transformer_classifier import TransformerClassifier
from keras_posenc.models.transformer_lm import TransformerLM
from keras_posenc.preprocessing.text_sequences import special_token_id
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import import_keras_hub

_MODEL_KINDS = (
    (TransformerClassifier, "classifier"),
    (TransformerLM, "lm"),
    (Seq2SeqTransformer, "seq2seq"),
)


def _model_kind(model):
    """`"classifier"`, `"lm"` or `"seq2seq"`, and whether the model is ours."""
    for cls, kind in _MODEL_KINDS:
        if isinstance(model, cls):
            return kind, True
    if not isinstance(model, keras.Model):
        raise ValueError(
            "`model` must be a keras_posenc.models.TransformerClassifier, "
            "TransformerLM or Seq2SeqTransformer, or a Keras model that maps "
            "int token ids `(batch, length)` to class scores `(batch, "
            "num_classes)` or next-token logits `(batch, length, vocabulary)`. "
            f"Received: model of type {type(model).__name__}"
        )
    rank = len(_output_shape(model))
    if rank not in (2, 3):
        raise ValueError(
            "A Keras `model` is exported as a classifier (outputs `(batch, "
            "num_classes)`) or a decoder-only language model (outputs `(batch, "
            "length, vocabulary_size)`). Received: a model whose output has "
            f"shape {_output_shape(model)}"
        )
    return ("classifier" if rank == 2 else "lm"), False


def _output_shape(model):
    """The output shape of `model` for int ids `(batch, length)`."""
    try:
        output = model.output
    except (AttributeError, ValueError):
        output = None
    if output is None or isinstance(output, (list, tuple, dict)):
        try:
            output = model.compute_output_spec(
                keras.KerasTensor((None, None), dtype="int32")
            )
        except Exception as error:
            raise ValueError(
                "`model` must take one int tensor of token ids `(batch, length)` "
                f"and give one tensor. Tracing it on such ids failed: {error}"
            ) from None
    if isinstance(output, (list, tuple, dict)):
        raise ValueError(
            f"`model` must give one tensor. Received: outputs {output!r:.200}"
        )
    return tuple(output.shape)


def _input_length(model):
    """The static sequence length of a Keras model's input, or None."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        return inputs[0].shape[1]
    return None


def _gives_probabilities(model):
    """True or False for a head that ends in softmax or linear; else None."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    if activation is None:
        return None
    name = keras.activations.serialize(activation)
    name = name.get("config", name) if isinstance(name, dict) else name
    if name == "softmax":
        return True
    if name == "linear":
        return False
    return None


def _describe(model, ours, kind, sequence_length, max_length):
    """What the export needs to know: sizes and whether to apply a softmax."""
    if ours:
        return {
            "vocabulary_size": model.vocabulary_size,
            "max_length": model.max_length,
            "num_classes": getattr(model, "num_classes", None),
            "activation": getattr(model, "activation", None),
        }
    length = _input_length(model)
    if length is None:
        length = sequence_length if kind == "classifier" else max_length
    if length is None:
        argument = "sequence_length" if kind == "classifier" else "max_length"
        raise ValueError(
            f"A Keras `model` whose input length is not fixed needs `{argument}` "
            f"(the longest id sequence it takes). Received: {argument}=None"
        )
    shape = _output_shape(model)
    probabilities = _gives_probabilities(model)
    activation = {True: "softmax", False: "linear", None: None}[probabilities]
    return {
        "vocabulary_size": shape[-1] if kind == "lm" else None,
        "max_length": int(length),
        "num_classes": shape[-1] if kind == "classifier" else None,
        "activation": activation,
    }


def _check_tokenizer(tokenizer, vocabulary_size):
    keras_hub = import_keras_hub("`export_for_serving` (with tensorflow-text)")
    if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        raise ValueError(
            "`tokenizer` must be a keras_hub.tokenizers.WordPieceTokenizer (see "
            "keras_posenc.tokenizers.fit_word_piece_tokenizer). Received: "
            f"tokenizer of type {type(tokenizer).__name__}"
        )
    vocabulary = tokenizer.get_vocabulary()
    if not vocabulary or vocabulary[0] != "[PAD]":
        raise ValueError(
            "The tokenizer's id 0 must be [PAD] (the models read 0 as padding). "
            f"Received: id 0 is {vocabulary[0] if vocabulary else None!r}"
        )
    if vocabulary_size is not None and len(vocabulary) > vocabulary_size:
        raise ValueError(
            f"The tokenizer has {len(vocabulary)} tokens, more than the model's "
            f"vocabulary_size={vocabulary_size}."
        )


def _check_length(name, value, default, upper):
    value = default if value is None else value
    check_positive_int(name, value)
    if value > upper:
        raise ValueError(
            f"`{name}` must not exceed the model's max_length ({upper}). "
            f"Received: {name}={value}"
        )
    return int(value)


def _reject(kind, **arguments):
    for name, value in arguments.items():
        if value is not None:
            raise ValueError(
                f"`{name}` does not apply to a {kind} model. Received: {name}={value!r}"
            )


def _classifier_options(described, tokenizer, label_names, sequence_length):
    if isinstance(label_names, str) or not isinstance(label_names, (list, tuple)):
        raise ValueError(
            "`label_names` must be a list of strings, one per class "
            f"(num_classes={described['num_classes']}). Received: "
            f"label_names={label_names!r:.80}"
        )
    if len(label_names) != described["num_classes"] or not all(
        isinstance(name, str) and name for name in label_names
    ):
        raise ValueError(
            f"`label_names` must hold {described['num_classes']} non-empty "
            "strings, one per class. Received: label_names={list(label_names)!r:.200}"
        )
    activation = described["activation"]
    if activation not in ("softmax", "linear"):
        raise ValueError(
            "A classifier is exported with probabilities, so its head must use "
            "activation='softmax' (or None for logits, softmaxed in the export); "
            "a Keras model must end in a Dense or Activation layer with "
            "'softmax' or 'linear', or a Softmax layer. Received: "
            f"activation={activation!r}"
        )
    return {
        "label_names": list(label_names),
        "sequence_length": _check_length(
            "sequence_length",
            sequence_length,
            tokenizer.sequence_length or described["max_length"],
            described["max_length"],
        ),
        "apply_softmax": activation == "linear",
    }


def export_for_serving(
    model,
    tokenizer,
    path,
    label_names=None,
    sequence_length=None,
    max_length=None,
    max_prompt_length=None,
    sampler="greedy",
    no_repeat_ngram_size=None,
):
    """Exports a model with its tokenizer as a SavedModel that serves raw text.

    The SavedModel's `serving_default` signature takes one input, `text`: a
    1-D `tf.string` batch. A `TransformerClassifier` returns `probabilities`
    (float32 `(batch, num_classes)`) and `label` (`tf.string (batch,)`, the
    name of the most probable class); a `TransformerLM` or a
    `Seq2SeqTransformer` returns `generated_text` (`tf.string (batch,)`). The
    WordPiece tokenizer and the detokenization run inside the graph, in the
    text conventions of `keras_posenc.export`. The graph is pure TensorFlow
    whatever backend trained the model: on another backend the model and
    tokenizer are saved to a temporary directory and exported by a
    `KERAS_BACKEND=tensorflow` subprocess. Loading needs only `tensorflow`
    and `import tensorflow_text` (which registers the tokenizer's ops).

    Beside the graph, `path/assets.extra/` holds `vocabulary.txt` and
    `tokenizer.json` (`keras_posenc.tokenizers.load_tokenizer` reads them
    back), and `labels.txt` for a classifier.

    Args:
        model: a trained `keras_posenc.models.TransformerClassifier`,
            `TransformerLM` or `Seq2SeqTransformer`, or any Keras model that
            takes int token ids `(batch, length)` (0 is padding) and gives
            class scores `(batch, num_classes)` (served as a classifier) or
            next-token logits `(batch, length, vocabulary_size)` (served as a
            decoder-only LM in the `TransformerLM` prompt convention, each
            step rerunning the whole sequence, since such a model has no
            cache). Its last layer tells probabilities from logits: a Dense
            or Activation layer with `"softmax"` or `"linear"`, or a
            `Softmax` layer. On another backend than TensorFlow it must be
            serializable (`keras.saving.register_keras_serializable`).
        tokenizer: the `keras_hub.tokenizers.WordPieceTokenizer` the model was
            trained with, `[PAD]` at id 0 (generators also need `[BOS]` and
            `[EOS]`, a `TransformerLM` `[SEP]`), as made by
            `keras_posenc.tokenizers.fit_word_piece_tokenizer`.
        path: str or path-like. Directory of the SavedModel; for TF Serving,
            `saved_models/NAME/VERSION/` (e.g. `saved_models/chatbot/1`).
            Files already there are overwritten.
        label_names: list of str, one per class. Required for a classifier,
            rejected otherwise.
        sequence_length: int. Classifier and `Seq2SeqTransformer`: the
            input text is cut to this many ids (padded with 0 for the
            classifier). Defaults to the tokenizer's `sequence_length`, else
            the model's `max_length` (a Keras model's fixed input length, or
            this argument when the input length is not fixed).
        max_length: int. Generators: length of the generated sequence, prompt
            (or `[BOS]`) included; at most the model's `max_length`, its
            default (for a Keras model: its fixed input length, else this
            argument is required).
        max_prompt_length: int. `TransformerLM` only: most ids of the prompt
            `[BOS] text [SEP]`; a longer text keeps its last tokens, so that
            the reply always has `max_length - max_prompt_length` ids of room.
            At least 3, below `max_length`. Defaults to `max_length // 2`.
        sampler: generators only: `"greedy"`, `"top_k"`, `"top_p"`, `"beam"`
            or a `keras_hub.samplers.Sampler` instance; names take keras-hub's
            defaults (`top_p` is p=0.1). Defaults to `"greedy"`.
        no_repeat_ngram_size: int or None. Generators only: the served
            decoding never repeats an n-gram of this size, as
            `generate(no_repeat_ngram_size=...)`. Defaults to `None`.

    Returns:
        The path of the SavedModel, as a str.

    Example:

    ```python
    keras_posenc.export.export_for_serving(
        classifier, tokenizer, "saved_models/news_classifier/1",
        label_names=keras_posenc.datasets.BBC_NEWS_CLASSES,
    )
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 (registers the tokenizer's ops)
    served = tf.saved_model.load("saved_models/news_classifier/1")
    served.signatures["serving_default"](text=tf.constant(["Shares rose."]))
    # {"probabilities": <float32 (1, 5)>, "label": <string (1,)>}
    ```
    """
    kind, ours = _model_kind(model)
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"`path` must be a str or path-like. Received: path={path!r:.80} of "
            f"type {type(path).__name__}"
        )
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"`path` must be a directory (or not exist yet). Received: path={path}, "
            "an existing file"
        )
    described = _describe(
        model,
        ours,
        kind,
        sequence_length or getattr(tokenizer, "sequence_length", None),
        max_length,
    )
    _check_tokenizer(tokenizer, described["vocabulary_size"])

    if kind == "classifier":
        _reject(
            "classifier",
            max_length=max_length,
            max_prompt_length=max_prompt_length,
            sampler=None if sampler == "greedy" else sampler,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        options = _classifier_options(
            described, tokenizer, label_names, sequence_length
        )
    else:
        _reject("generative", label_names=label_names)
        max_length = _check_length(
            "max_length", max_length, described["max_length"], described["max_length"]
        )
        options = {
            "max_length": max_length,
            "sampler": keras.saving.serialize_keras_object(get_sampler(sampler)),
            "bos_id": special_token_id(tokenizer, "[BOS]"),
            "eos_id": special_token_id(tokenizer, "[EOS]"),
            "no_repeat_ngram_size": check_no_repeat_ngram_size(no_repeat_ngram_size),
        }
        if kind == "lm":
            _reject("TransformerLM", sequence_length=sequence_length)
            if max_prompt_length is None:
                max_prompt_length = max_length // 2
            check_positive_int("max_prompt_length", max_prompt_length)
            if not 3 <= max_prompt_length < max_length:
                raise ValueError(
                    "`max_prompt_length` must be at least 3 ([BOS], one token, "
                    f"[SEP]) and below max_length={max_length}. Received: "
                    f"max_prompt_length={max_prompt_length}"
                )
            options["max_prompt_length"] = int(max_prompt_length)
            options["sep_id"] = special_token_id(tokenizer, "[SEP]")
        else:
            if max_length < 2:
                raise ValueError(
                    "`max_length` must be at least 2 ([BOS] and one generated "
                    f"id). Received: max_length={max_length}"
                )
            options["sequence_length"] = _check_length(
                "sequence_length",
                sequence_length,
                tokenizer.sequence_length or model.max_length,
                model.max_length,
            )
        if not ours and described["activation"] is None:
            raise ValueError(
                "A Keras language model is served with a sampler over its "
                "logits, so it must end in a Dense layer with a linear "
                "activation (logits) or 'softmax'."
            )
        options["probabilities"] = described["activation"] == "softmax"
    options.update({"kind": kind, "path": path, "cached": ours})

    if keras.backend.backend() == "tensorflow":
        serving_graph.write_serving_model(model, tokenizer, path, options)
    else:
        _export_in_subprocess(model, tokenizer, options)
    return path


def _export_in_subprocess(model, tokenizer, options):
    """Saves model and tokenizer, then exports them on the tensorflow backend."""
    from keras_posenc.tokenizers import save_tokenizer

    with tempfile.TemporaryDirectory(prefix="keras_posenc_export_") as directory:
        model.save(os.path.join(directory, serving_graph.MODEL_FILENAME))
        save_tokenizer(
            tokenizer, os.path.join(directory, serving_graph.TOKENIZER_DIRNAME)
        )
        options_path = os.path.join(directory, serving_graph.OPTIONS_FILENAME)
        with open(options_path, "w", encoding="utf-8") as file:
            json.dump(options, file)
        environment = dict(os.environ, KERAS_BACKEND="tensorflow")
        # The subprocess imports this very copy of keras_posenc.
        package_parent = os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        )
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [package_parent, environment.get("PYTHONPATH")])
        )
        result = subprocess.run(
            [sys.executable, "-m", serving_graph.__name__, directory],
            env=environment,
            capture_output=True,
            text=True,
        )
    if result.returncode:
        raise RuntimeError(
            "Exporting on the tensorflow backend (in a subprocess) failed with "
            f"exit code {result.returncode}:\n{result.stderr[-4000:]}"
        )

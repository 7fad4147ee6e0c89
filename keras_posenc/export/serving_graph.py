"""Writes the TensorFlow SavedModel; runs on the tensorflow backend only.

`export_for_serving` calls `write_serving_model` in-process on the tensorflow
backend, and otherwise runs this module as a script in a
`KERAS_BACKEND=tensorflow` subprocess on a directory holding `model.keras`,
the tokenizer (`keras_posenc.tokenizers.save_tokenizer`) and `options.json`.
The graph ops here are TensorFlow's: tokenizing strings, ragged tensors and
string joins have no `keras.ops` equivalent.
"""

import functools
import json
import os
import sys

from keras_posenc.preprocessing.readable_text import readable_text

INPUT_NAME = "text"
MODEL_FILENAME = "model.keras"
TOKENIZER_DIRNAME = "tokenizer"
OPTIONS_FILENAME = "options.json"
LABELS_FILENAME = "labels.txt"


def _checked_text(text):
    """`text`, checked at run time to be a 1-D batch (the signature's shape).

    A loaded signature checks the dtype of its input but not its shape, so a
    scalar or a 2-D string tensor would otherwise run through the graph. The
    static shape is `(None,)`, so TensorFlow folds any check of `tf.rank(text)`
    to true; the shape goes through serialize/parse, whose output shape is
    unknown until run time, and `ensure_shape` backs the check up.
    """
    import tensorflow as tf

    shape = tf.io.parse_tensor(tf.io.serialize_tensor(tf.shape(text)), tf.int32)
    check = tf.debugging.Assert(
        tf.equal(tf.size(shape), 1),
        [
            f"`{INPUT_NAME}` must be a string tensor of shape (None,), a 1-D batch "
            "of strings. Received a string tensor of shape",
            shape,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.ensure_shape(text, [None], name=f"{INPUT_NAME}_must_have_shape_None")


def _tokenize(tokenizer, text):
    """Ragged ids of a `tf.string (batch,)`, as keras-hub's Python path gives."""
    import tensorflow as tf

    # Invalid UTF-8 (possible over gRPC) becomes U+FFFD instead of failing the
    # request. TF-text's ops end a string at a NUL byte, where keras-hub's
    # Python tokenizer (used in eager training code) splits words on it.
    text = tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    text = tf.strings.regex_replace(text, "\x00", " ")
    return tokenizer.tokenize(text)


def _generated_text(tokenizer, token_ids, starts, stop_token_id):
    """`tf.string (batch,)`: detokenized ids from `starts` up to the first stop."""
    import tensorflow as tf

    positions = tf.range(tf.shape(token_ids)[1])[tf.newaxis, :]
    generated = positions >= tf.cast(starts, "int32")[:, tf.newaxis]
    is_stop = tf.logical_and(tf.equal(token_ids, stop_token_id), generated)
    before_stop = tf.equal(tf.cumsum(tf.cast(is_stop, "int32"), axis=1), 0)
    keep = generated & before_stop & tf.not_equal(token_ids, 0)
    return readable_text(tokenizer.detokenize(tf.ragged.boolean_mask(token_ids, keep)))


def _serving_function(model, tokenizer, options):
    """The `serving_default` function: `tf.string (batch,)` to named outputs."""
    import tensorflow as tf

    kind = options["kind"]
    if kind == "classifier":
        sequence_length = options["sequence_length"]
        label_names = tf.constant(options["label_names"])

        def serve(text):
            ids = _tokenize(tokenizer, text)[:, :sequence_length]
            ids = ids.to_tensor(default_value=0, shape=[None, sequence_length])
            outputs = tf.cast(model(ids, training=False), "float32")
            if options["apply_softmax"]:
                outputs = tf.nn.softmax(outputs, axis=-1)
            labels = tf.gather(label_names, tf.argmax(outputs, axis=-1))
            return {"probabilities": outputs, "label": labels}

        return serve

    from keras_posenc.utils.validation import import_keras_hub

    keras_hub = import_keras_hub("The serving graph (keras-hub's samplers)")
    sampler = keras_hub.samplers.get(options["sampler"])
    max_length = options["max_length"]
    bos, eos = options["bos_id"], options["eos_id"]

    if kind == "lm":
        keep = options["max_prompt_length"] - 2
        sep = options["sep_id"]

        def prompts(text):
            """`[BOS] last tokens [SEP]`, padded: the model continues it."""
            ids = _tokenize(tokenizer, text)
            ids = ids[:, -keep:]  # the last tokens of a long prompt
            column = tf.ones([ids.nrows(), 1], "int32")
            prompt = tf.concat(
                [
                    tf.RaggedTensor.from_tensor(column * bos),
                    tf.cast(ids, "int32"),
                    tf.RaggedTensor.from_tensor(column * sep),
                ],
                axis=1,
            )
            token_ids = prompt.to_tensor(default_value=0, shape=[None, max_length])
            return token_ids, prompt.row_lengths(), None

    else:
        sequence_length = options["sequence_length"]

        def prompts(text):
            """The source ids; the decoder starts from `[BOS]`."""
            ids = _tokenize(tokenizer, text)[:, :sequence_length]
            ids = ids.to_tensor(default_value=0, shape=[None, sequence_length])
            return ids, tf.ones([tf.shape(ids)[0]], "int32"), bos

    generate_step = getattr(model, "generate_step", None)
    if not options.get("cached", True):
        generate_step = functools.partial(
            uncached_generate_step, model, probabilities=options["probabilities"]
        )

    def serve(text):
        inputs, starts, start_token_id = prompts(text)
        token_ids = generate_step(
            inputs,
            max_length,
            sampler=sampler,
            stop_token_id=eos,
            start_token_id=start_token_id,
            no_repeat_ngram_size=options.get("no_repeat_ngram_size"),
        )
        return {"generated_text": _generated_text(tokenizer, token_ids, starts, eos)}

    return serve


def uncached_generate_step(
    model,
    inputs,
    max_length,
    sampler,
    stop_token_id=None,
    start_token_id=None,
    probabilities=False,
    no_repeat_ngram_size=None,
):
    """`generate_step` for any Keras model from ids to next-token scores.

    Each step reruns `model` on the whole right-padded sequence (there is no
    cache to reuse) and samples from its scores at the newest slot, as
    keras-hub's samplers do; generation starts after the shortest prompt.

    Args:
        model: a Keras model from int ids `(batch, max_length)` to logits (or
            probabilities, with `probabilities=True`) `(batch, max_length,
            vocabulary_size)`.
        inputs: int tensor `(batch, max_length)`, right-padded prompts.
        max_length, sampler, stop_token_id: as in `TransformerLM.generate`.
        start_token_id: must be None (decoder-only).
        probabilities: bool. The model gives probabilities, not logits.
        no_repeat_ngram_size: int or None, as in `TransformerLM.generate`.

    Returns:
        Int32 tensor `(batch, max_length)`.
    """
    from keras import ops

    from keras_posenc.models.generation import clear_after_stop
    from keras_posenc.models.generation import next_token_scores

    del start_token_id  # a decoder-only model continues its prompts
    token_ids = ops.cast(inputs, "int32")
    prompt_mask = ops.not_equal(token_ids, 0)
    index = ops.min(ops.sum(ops.cast(prompt_mask, "int32"), axis=1))

    def next(prompt, cache, index):
        scores = ops.cast(model(prompt, training=False), "float32")
        batch_size, vocabulary_size = ops.shape(prompt)[0], ops.shape(scores)[-1]
        scores = ops.slice(scores, [0, index - 1, 0], [batch_size, 1, vocabulary_size])
        scores = ops.squeeze(scores, axis=1)
        if probabilities:
            scores = ops.log(ops.maximum(scores, 1e-30))
        return (
            next_token_scores(scores, prompt, index, no_repeat_ngram_size),
            None,
            cache,
        )

    output = sampler(
        next=next,
        prompt=token_ids,
        index=index,
        mask=prompt_mask,
        stop_token_ids=None if stop_token_id is None else (stop_token_id,),
    )
    return clear_after_stop(ops.cast(output, "int32"), prompt_mask, stop_token_id)


def write_serving_model(model, tokenizer, path, options):
    """Writes the SavedModel and `assets.extra/` at `path` (tensorflow backend)."""
    import keras
    import tensorflow as tf

    from keras_posenc.preprocessing.text_sequences import unpadded_tokenizer
    from keras_posenc.tokenizers import save_tokenizer

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "The serving graph is built on the tensorflow backend only. "
            f"Current backend: {keras.backend.backend()}"
        )
    ragged_tokenizer = unpadded_tokenizer(tokenizer)
    archive = keras.export.ExportArchive()
    archive.track(model)
    serve_batch = _serving_function(model, ragged_tokenizer, options)

    def serve(text):
        return serve_batch(_checked_text(text))

    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)],
    )
    archive.write_out(path, verbose=False)

    # Files a client or a later `load_tokenizer` may want; TF Serving ignores
    # `assets.extra/` (it reads warm-up requests from there, nothing else).
    extra = os.path.join(path, "assets.extra")
    save_tokenizer(tokenizer, extra)
    if options["kind"] == "classifier":
        with open(os.path.join(extra, LABELS_FILENAME), "w", encoding="utf-8") as f:
            f.writelines(f"{name}\n" for name in options["label_names"])


def main(directory):
    """Exports the model saved in `directory` (the subprocess entry point)."""
    import keras

    import keras_posenc  # noqa: F401 (registers the models for loading)
    from keras_posenc.tokenizers import load_tokenizer

    with open(os.path.join(directory, OPTIONS_FILENAME), encoding="utf-8") as file:
        options = json.load(file)
    model = keras.saving.load_model(os.path.join(directory, MODEL_FILENAME))
    tokenizer = load_tokenizer(os.path.join(directory, TOKENIZER_DIRNAME))
    write_serving_model(model, tokenizer, options["path"], options)


if __name__ == "__main__":
    main(sys.argv[1])

"""`make demo`: train a news classifier, export it for TF Serving, serve raw text.

1. BBC News (2,127 articles in five topics, `keras_posenc.datasets`), a
   WordPiece vocabulary learned from the training articles
   (`keras_posenc.tokenizers`) and a `TransformerClassifier`.
2. `keras_posenc.export.export_for_serving` writes a TensorFlow SavedModel to
   `saved_models/news_classifier/1/` (TF Serving's `NAME/VERSION/` layout)
   whose signature takes raw strings.
3. The SavedModel is loaded back with `tf.saved_model.load` (TensorFlow and
   tensorflow-text only), scored on the raw test articles and asked about a
   few new sentences.

The fast setting (default) trains for about a minute on 2 CPU cores; run
`KERAS_POSENC_FAST=0 make demo` or `python examples/demo.py --full` for the
full one. Any backend works (`KERAS_BACKEND=jax make demo`): the export runs
in a TensorFlow subprocess when needed.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_posenc  # noqa: E402

SAVED_MODEL_DIR = Path(__file__).resolve().parent.parent / "saved_models"
# Fast: the first 128 tokens (title and lead paragraph) and one small block;
# the vocabulary is learned from the first 1,000 characters of each article
# (the learner takes minutes on whole articles).
FAST = dict(
    vocabulary_size=5000,
    vocabulary_characters=1000,
    sequence_length=128,
    hidden_dim=64,
    num_layers=1,
    intermediate_dim=128,
    epochs=4,
)
FULL = dict(
    vocabulary_size=15000,
    vocabulary_characters=None,
    sequence_length=512,
    hidden_dim=128,
    num_layers=2,
    intermediate_dim=256,
    epochs=10,
)
NEW_SENTENCES = [
    "Shares in the bank fell sharply after it warned that profits would drop.",
    "The striker scored twice as United won the cup final at Wembley.",
    "The prime minister faces a vote in parliament over the new tax plans.",
    "The band's new album went straight to number one in the charts.",
    "A new mobile phone lets users browse the web and download music.",
]


def parse_setting():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full setting (slower)")
    full = parser.parse_args().full or os.environ.get("KERAS_POSENC_FAST") == "0"
    return ("full", FULL) if full else ("fast", FAST)


def main():
    setting_name, setting = parse_setting()
    keras.utils.set_random_seed(0)
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{setting_name} setting"
        + (" (KERAS_POSENC_FAST=0 for the full one)" if setting_name == "fast" else "")
    )

    train_texts, train_labels = keras_posenc.datasets.load_bbc_news(split="train")
    test_texts, test_labels = keras_posenc.datasets.load_bbc_news(split="test")
    label_names = keras_posenc.datasets.BBC_NEWS_CLASSES
    print(
        f"BBC News: {len(train_texts)} training and {len(test_texts)} test "
        f"articles in {len(label_names)} topics"
    )

    start = time.perf_counter()
    tokenizer = keras_posenc.tokenizers.fit_word_piece_tokenizer(
        [text[: setting["vocabulary_characters"]] for text in train_texts],
        vocabulary_size=setting["vocabulary_size"],
        sequence_length=setting["sequence_length"],
    )
    x_train = keras_posenc.preprocessing.encode_texts(tokenizer, train_texts)
    x_test = keras_posenc.preprocessing.encode_texts(tokenizer, test_texts)
    y_train, y_test = np.array(train_labels), np.array(test_labels)
    print(
        f"WordPiece vocabulary of {tokenizer.vocabulary_size()} tokens, first "
        f"{setting['sequence_length']} tokens of each article "
        f"({time.perf_counter() - start:.0f} s)"
    )

    model = keras_posenc.models.TransformerClassifier(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_classes=len(label_names),
        max_length=setting["sequence_length"],
        hidden_dim=setting["hidden_dim"],
        num_layers=setting["num_layers"],
        num_heads=4,
        intermediate_dim=setting["intermediate_dim"],
        dropout=0.1,
        position="sinusoidal",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=32,
        epochs=setting["epochs"],
        validation_data=(x_test, y_test),
        verbose=0,
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(
        f"TransformerClassifier ({model.count_params():,} parameters, sinusoidal "
        f"positions), {setting['epochs']} epochs in "
        f"{time.perf_counter() - start:.0f} s: test accuracy {accuracy:.3f}"
    )

    path = SAVED_MODEL_DIR / "news_classifier" / "1"
    start = time.perf_counter()
    keras_posenc.export.export_for_serving(
        model, tokenizer, path, label_names=label_names
    )
    print(
        f"exported to {path.relative_to(SAVED_MODEL_DIR.parent)}/ "
        f"({time.perf_counter() - start:.0f} s)"
    )

    import tensorflow as tf
    import tensorflow_text  # noqa: F401 (registers the tokenizer's ops)

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    served = serve(text=tf.constant(test_texts))
    served_accuracy = np.mean(np.argmax(served["probabilities"], axis=1) == y_test)
    print(f"served model, raw test articles in: test accuracy {served_accuracy:.3f}")
    served = serve(text=tf.constant(NEW_SENTENCES))
    for sentence, label, probabilities in zip(
        NEW_SENTENCES, served["label"].numpy(), served["probabilities"].numpy()
    ):
        print(f"  {label.decode():<14}{probabilities.max():.2f}  {sentence}")


if __name__ == "__main__":
    main()

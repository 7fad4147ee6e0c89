"""`make demo`: fit a small model whose task needs positions, with and without them.

Task: does token 1 occur in the first half of the sequence? A position-wise
MLP followed by max pooling can only answer with position information, so the
sinusoidal and learned models should beat the position-free ("none") one.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_posenc import layers  # noqa: E402

VOCABULARY_SIZE = 8
SEQUENCE_LENGTH = 16
NUM_EXAMPLES = 4096


def make_data(rng, num_examples):
    tokens = rng.integers(2, VOCABULARY_SIZE, size=(num_examples, SEQUENCE_LENGTH))
    labels = rng.integers(0, 2, size=num_examples)
    half = SEQUENCE_LENGTH // 2
    # Every example holds exactly one token 1, in the first half iff label 1.
    where = np.where(
        labels == 1,
        rng.integers(0, half, num_examples),
        rng.integers(half, SEQUENCE_LENGTH, num_examples),
    )
    tokens[np.arange(num_examples), where] = 1
    return tokens.astype("int32"), labels.astype("float32")


def make_model(position, merge):
    inputs = keras.Input(shape=(SEQUENCE_LENGTH,), dtype="int32")
    x = layers.TokenAndPositionEmbedding(
        vocabulary_size=VOCABULARY_SIZE,
        max_length=SEQUENCE_LENGTH,
        embedding_dim=16,
        position=position,
        merge=merge,
    )(inputs)
    x = keras.layers.Dense(32, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_train, y_train = make_data(rng, NUM_EXAMPLES)
    x_test, y_test = make_data(rng, 1024)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    print(
        "task: is token 1 in the first half of a 16-token sequence? "
        f"({NUM_EXAMPLES} training examples, 1024 test)"
    )
    print(f"{'position':<12}{'merge':<8}{'test accuracy':>14}{'seconds':>9}")
    for position, merge in [
        ("none", "add"),
        ("sinusoidal", "add"),
        ("sinusoidal", "concat"),
        ("learned", "add"),
    ]:
        start = time.perf_counter()
        model = make_model(position, merge)
        model.fit(x_train, y_train, batch_size=64, epochs=8, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(
            f"{position:<12}{merge:<8}{accuracy:>14.3f}"
            f"{time.perf_counter() - start:>9.1f}"
        )


if __name__ == "__main__":
    main()

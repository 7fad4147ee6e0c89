"""Trains a tiny TransformerClassifier on one device and on two simulated CPUs.

Usage (each in its own process; the device count is fixed at start-up):
    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \
        python tests/hardening/distribution_check.py jax
    KERAS_BACKEND=tensorflow python tests/hardening/distribution_check.py tensorflow

Prints one JSON line: the loss curve of each run, plus (JAX) how the
ModelParallel kernels were laid out. `test_distribution.py` checks them.
"""

import json
import sys

STEPS = 6
BATCH_SIZE = 16


def data():
    import numpy as np

    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 20, size=(BATCH_SIZE, 8)).astype("int32")
    token_ids[:4, 6:] = 0  # some padding
    labels = (token_ids[:, 0] > token_ids[:, 1]).astype("int32")
    return token_ids, labels


def make_model():
    import keras

    import keras_posenc

    model = keras_posenc.models.TransformerClassifier(
        vocabulary_size=20,
        num_classes=2,
        max_length=8,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        dropout=0.0,
        position="rotary",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss="sparse_categorical_crossentropy",
    )
    return model


def loss_curve(model, weights):
    """Full-batch steps (one batch per epoch), from the same initial weights."""
    token_ids, labels = data()
    model.set_weights(weights)
    history = model.fit(
        token_ids,
        labels,
        batch_size=BATCH_SIZE,
        epochs=STEPS,
        shuffle=False,
        verbose=0,
    )
    return [float(loss) for loss in history.history["loss"]]


def run_jax():
    import keras

    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, devices
    keras.utils.set_random_seed(0)
    single = make_model()
    weights = single.get_weights()
    results = {"devices": len(devices), "single": loss_curve(single, weights)}

    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    results["data_parallel"] = loss_curve(make_model(), weights)

    mesh = keras.distribution.DeviceMesh(
        shape=(1, 2), axis_names=("batch", "model"), devices=devices
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    # Attention: the query/key/value kernels (hidden, heads, head_dim) split
    # their heads, the output kernel (heads, head_dim, hidden) too; the
    # feed-forward kernels split the intermediate width (Megatron-style).
    layout_map[r".*attention/(query|key|value)/kernel"] = (None, "model", None)
    layout_map[r".*attention/attention_output/kernel"] = ("model", None, None)
    layout_map[r".*feed_forward/intermediate_dense/kernel"] = (None, "model")
    layout_map[r".*feed_forward/output_dense/kernel"] = ("model", None)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    model = make_model()
    results["model_parallel"] = loss_curve(model, weights)
    sharded = {}
    for variable in model.trainable_variables:
        if "attention" in variable.path or "feed_forward" in variable.path:
            if variable.path.endswith("kernel"):
                spec = variable.value.sharding.spec
                sharded[variable.path] = [axis for axis in spec]
    results["model_parallel_layouts"] = sharded
    return results


def run_tensorflow():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    keras.utils.set_random_seed(0)
    single = make_model()
    weights = single.get_weights()
    results = {"single": loss_curve(single, weights)}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make_model()
    results["devices"] = strategy.num_replicas_in_sync
    results["mirrored"] = loss_curve(mirrored, weights)
    # Keras builds the model from float64-averaged ids under a strategy (see
    # keras_posenc.utils.validation); real float ids must still be refused.
    token_ids, labels = data()
    try:
        mirrored.fit(token_ids.astype("float32"), labels, verbose=0)
        results["float_ids_error"] = None
    except TypeError as error:
        results["float_ids_error"] = str(error)
    return results


if __name__ == "__main__":
    run = {"jax": run_jax, "tensorflow": run_tensorflow}[sys.argv[1]]
    print("RESULTS " + json.dumps(run()))

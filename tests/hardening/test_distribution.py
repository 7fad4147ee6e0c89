"""Training on two simulated CPU devices equals training on one.

Each engine runs in its own subprocess (`distribution_check.py`), because the
number of devices is fixed when JAX or TensorFlow starts:
- JAX with `XLA_FLAGS=--xla_force_host_platform_device_count=2`:
  `keras.distribution.DataParallel`, and `ModelParallel` with a `LayoutMap`
  that shards the attention and feed-forward kernels over a "model" axis;
- TensorFlow with two logical CPUs: `tf.distribute.MirroredStrategy`.
Every run starts from the same weights and takes the same full-batch steps,
so the loss curves must agree to float32 reduction-order noise. Each check
runs once per `make test`: in the pass of the backend it exercises.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run_check(engine, **env):
    environment = dict(
        os.environ,
        KERAS_BACKEND=engine,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        **env,
    )
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "distribution_check.py"), engine],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    assert result.returncode == 0 and lines, (
        result.stdout[-3000:] + result.stderr[-3000:]
    )
    return json.loads(lines[-1][len("RESULTS ") :])


def assert_same_curve(actual, expected):
    assert len(actual) == len(expected)
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs in the JAX pass")
def test_jax_data_and_model_parallel_match_one_device():
    results = run_check("jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert results["devices"] == 2
    single = results["single"]
    assert single[-1] < single[0], single  # it trains
    assert_same_curve(results["data_parallel"], single)
    assert_same_curve(results["model_parallel"], single)
    layouts = results["model_parallel_layouts"]
    heads = [None, "model", None]
    for name in ("query", "key", "value"):
        assert layouts[f"transformer_layer_0/self_attention/{name}/kernel"] == heads
    assert layouts["transformer_layer_0/self_attention/attention_output/kernel"] == [
        "model",
        None,
        None,
    ]
    feed_forward = "transformer_layer_0/feed_forward"
    assert layouts[f"{feed_forward}/intermediate_dense/kernel"] == [None, "model"]
    assert layouts[f"{feed_forward}/output_dense/kernel"] == ["model", None]


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="runs in the TensorFlow pass"
)
def test_tensorflow_mirrored_strategy_matches_one_device():
    results = run_check("tensorflow")
    assert results["devices"] == 2
    single = results["single"]
    assert single[-1] < single[0], single
    assert_same_curve(results["mirrored"], single)
    assert "`token_ids` must be an integer tensor" in results["float_ids_error"]

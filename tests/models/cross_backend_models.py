"""Loads saved models under this process' backend and compares their outputs.

Usage: KERAS_BACKEND=jax python tests/models/cross_backend_models.py DIR ATOL

For every `DIR/NAME.keras` with its `DIR/NAME.npz` (the model's inputs, by
input name, and `expected` outputs), loads the model with `safe_mode=True`,
and checks its outputs to `ATOL`. Several models share one process because
starting a backend costs seconds. The suite runs on every backend, so each
backend saves in its own run and the two others load: all six directions.
"""

import glob
import os
import subprocess
import sys

import keras
import numpy as np

import keras_posenc  # noqa: F401  (registers the models)


def model_inputs(data):
    inputs = {name: data[name] for name in data.files if name != "expected"}
    return inputs["token_ids"] if list(inputs) == ["token_ids"] else inputs


def main(directory, atol):
    paths = sorted(glob.glob(os.path.join(directory, "*.keras")))
    assert paths, f"no models in {directory}"
    for path in paths:
        stem = path[: -len(".keras")]
        data = np.load(stem + ".npz")
        model = keras.saving.load_model(path, safe_mode=True)
        actual = keras.ops.convert_to_numpy(model(model_inputs(data)))
        np.testing.assert_allclose(
            actual, data["expected"], atol=float(atol), rtol=0, err_msg=path
        )
        print(
            f"{keras.backend.backend()} {os.path.basename(stem)}: max abs diff "
            f"{np.max(np.abs(actual - data['expected'])):.2e}"
        )


def assert_models_load_across_backends(models, directory, atol=1e-5):
    """Saves `models` (name -> (model, inputs)) here; the other backends load them.

    Each other backend loads every model with `safe_mode=True` in one
    subprocess and compares its outputs.
    """
    for name, (model, inputs) in models.items():
        stem = os.path.join(str(directory), name)
        model.save(stem + ".keras")
        expected = keras.ops.convert_to_numpy(model(inputs))
        arrays = inputs if isinstance(inputs, dict) else {"token_ids": inputs}
        np.savez(stem + ".npz", expected=expected, **arrays)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    current = keras.backend.backend()
    for backend in ("tensorflow", "jax", "torch"):
        if backend == current:
            continue
        env = dict(
            os.environ,
            KERAS_BACKEND=backend,
            TF_CPP_MIN_LOG_LEVEL="3",
            PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        )
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), str(directory), str(atol)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"saved under {current}, loading under {backend} failed:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

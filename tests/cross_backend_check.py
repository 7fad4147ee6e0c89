"""Loads a `.keras` file under this process' backend and compares outputs.

Usage: KERAS_BACKEND=jax python tests/cross_backend_check.py MODEL.keras DATA.npz ATOL
`DATA.npz` holds `input_0`, `input_1`, ... and `expected`.
"""

import sys

import keras
import numpy as np

import keras_posenc  # noqa: F401  (registers the layers)


def main(model_path, data_path, atol):
    data = np.load(data_path)
    inputs = [data[f"input_{i}"] for i in range(len(data.files) - 1)]
    model = keras.saving.load_model(model_path, safe_mode=True)
    outputs = model(inputs if len(inputs) > 1 else inputs[0])
    actual = keras.ops.convert_to_numpy(outputs)
    np.testing.assert_allclose(actual, data["expected"], atol=float(atol), rtol=0)
    print(
        f"{keras.backend.backend()}: max abs diff "
        f"{np.max(np.abs(actual - data['expected'])):.2e}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])

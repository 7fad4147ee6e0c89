"""Smoke test of an installed keras-posenc wheel (run by smoke_install.sh).

Runs outside the checkout, so that `import keras_posenc` finds the installed
package: imports, calls a layer, builds a model and saves and loads it.
"""

import importlib.util
import os
import sys
import tempfile

import keras
import numpy as np

import keras_posenc

assert "site-packages" in keras_posenc.__file__, keras_posenc.__file__
backend = keras.backend.backend()
others = {"tensorflow", "jax", "torch"} - {backend}
installed = sorted(name for name in others if importlib.util.find_spec(name))
assert not installed, f"expected one backend ({backend}), also found {installed}"

layer = keras_posenc.layers.SinusoidalPositionEncoding()
outputs = layer(np.zeros((2, 5, 8), "float32"))
assert tuple(outputs.shape) == (2, 5, 8)

model = keras_posenc.models.TransformerClassifier(
    vocabulary_size=11,
    num_classes=3,
    max_length=8,
    hidden_dim=8,
    num_layers=1,
    num_heads=2,
    intermediate_dim=8,
    position="rotary",
)
token_ids = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]], "int32")
expected = keras.ops.convert_to_numpy(model(token_ids))
with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(token_ids)), expected)
print(
    f"keras-posenc {keras_posenc.__version__} from {keras_posenc.__file__} on "
    f"{backend} (Python {sys.version.split()[0]}): import, layer call and "
    ".keras save/load OK"
)

"""Checks every keras_posenc layer must pass, on whatever backend runs the tests.

`run_layer_test` is the one call per layer (like Keras' own `run_layer_test`):
config and JSON round trips, weight counts, symbolic and eager calls, masks,
one `fit` step, mixed precision and `.keras` save/load.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np

from keras_posenc.utils import to_numpy

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")


def backend_share(names):
    """The part of `names` that this backend's pass trains to convergence.

    A convergence test trains one model per scheme (10-30 s each). The
    schemes take turns over the backends, so the three passes of `make test`
    together train every scheme once; the cheap exactness tests (cached ==
    full decoding, formulas, save/load) still run every scheme on every
    backend, and `test_cross_backend.py` compares the backends' arithmetic.
    """
    index = BACKENDS.index(keras.backend.backend())
    return [name for i, name in enumerate(names) if i % len(BACKENDS) == index]


def _as_tuple(input_data):
    return tuple(input_data) if isinstance(input_data, (list, tuple)) else (input_data,)


def _is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


def _first(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _symbolic_inputs(arrays, dynamic_axes=()):
    inputs = []
    for array in arrays:
        shape = list(array.shape[1:])
        for axis in dynamic_axes:
            shape[axis - 1] = None
        inputs.append(keras.Input(shape=tuple(shape), dtype=str(array.dtype)))
    return inputs


def build_model(layer, input_data, call_kwargs=None, head=False, dynamic_axes=()):
    """Functional model `inputs -> layer(...)`, optionally with a Dense head."""
    call_kwargs = call_kwargs or {}
    inputs = _symbolic_inputs(_as_tuple(input_data), dynamic_axes)
    outputs = _first(layer(*inputs, **call_kwargs))
    if head:
        outputs = keras.layers.Dense(1, dtype="float32", name="head")(outputs)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs)


def assert_config_round_trip(layer):
    config = layer.get_config()
    revived = layer.__class__.from_config(config)
    assert revived.get_config() == config, (
        "from_config(get_config()) changed the config"
    )

    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert restored.__class__ is layer.__class__
    assert restored.get_config() == config, "JSON round trip changed the config"
    registered = keras.saving.get_registered_object(
        f"keras_posenc>{layer.__class__.__name__}"
    )
    assert registered is layer.__class__, "layer is not registered for serialization"


def assert_save_load_equal(model, input_data, tmp_path, atol=1e-6):
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    args = _as_tuple(input_data)
    model_input = list(args) if len(args) > 1 else args[0]
    expected = to_numpy(model(model_input))
    actual = to_numpy(loaded(model_input))
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)
    return path


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    call_kwargs=None,
    expected_output_dtype="float32",
    supports_masking=None,
    run_training_check=True,
    run_mixed_precision_check=True,
    tmp_path=None,
):
    """Runs the standard checks on `layer_cls(**init_kwargs)`.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: numpy array, or tuple of arrays passed positionally.
        expected_output_shape: shape of the (first) output on `input_data`.
        expected_num_trainable_weights: required; counts variables, not scalars.
        expected_num_non_trainable_weights: int.
        call_kwargs: extra keyword arguments for every call.
        expected_output_dtype: dtype of the output under the float32 policy.
        supports_masking: if set, asserts `layer.supports_masking` and, when
            True, that a mask on the first input passes through unchanged.
        run_training_check: one `fit` step through a Dense head, finite loss.
        run_mixed_precision_check: output and variable dtypes under
            `mixed_float16` and `mixed_bfloat16`.
        tmp_path: directory for the `.keras` save/load check (skipped if None).
    """
    call_kwargs = call_kwargs or {}
    args = _as_tuple(input_data)
    expected_output_shape = tuple(expected_output_shape)

    layer = layer_cls(**init_kwargs)
    assert_config_round_trip(layer)

    # Eager call builds the layer.
    output = _first(layer(*args, **call_kwargs))
    assert layer.built
    assert tuple(output.shape) == expected_output_shape, (
        f"eager output shape {tuple(output.shape)} != {expected_output_shape}"
    )
    assert keras.backend.standardize_dtype(output.dtype) == expected_output_dtype
    assert len(layer.trainable_weights) == expected_num_trainable_weights, (
        f"{len(layer.trainable_weights)} trainable weights, "
        f"expected {expected_num_trainable_weights}"
    )
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    assert np.all(np.isfinite(to_numpy(output).astype("float64")))
    assert_config_round_trip(layer)

    # compute_output_shape agrees with the eager output.
    if len(args) == 1 and not call_kwargs:
        computed = layer.compute_output_shape(args[0].shape)
        assert tuple(computed) == expected_output_shape

    # Symbolic call on a fresh layer.
    fresh = layer_cls(**init_kwargs)
    symbolic_inputs = _symbolic_inputs(args)
    symbolic_output = _first(fresh(*symbolic_inputs, **call_kwargs))
    assert tuple(symbolic_output.shape)[1:] == expected_output_shape[1:]
    assert keras.backend.standardize_dtype(symbolic_output.dtype) == (
        expected_output_dtype
    )

    if supports_masking is not None:
        assert layer.supports_masking == supports_masking
        if supports_masking:
            first = args[0]
            mask = np.ones(first.shape[:2], dtype=bool)
            mask[:, -1] = False
            returned = layer.compute_mask(first, mask)
            np.testing.assert_array_equal(to_numpy(returned), mask)

    if run_training_check:
        model = build_model(layer_cls(**init_kwargs), args, call_kwargs, head=True)
        model.compile(optimizer="sgd", loss="mse")
        target = np.zeros(tuple(model.output.shape[1:]), "float32")[None]
        target = np.repeat(target, args[0].shape[0], axis=0)
        x = list(args) if len(args) > 1 else args[0]
        history = model.fit(x, target, batch_size=args[0].shape[0], epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])

    if run_mixed_precision_check:
        for policy in ("mixed_float16", "mixed_bfloat16"):
            mixed = layer_cls(**{**init_kwargs, "dtype": policy})
            mixed_output = _first(mixed(*args, **call_kwargs))
            compute_dtype = policy.split("_")[1]
            if _is_float(expected_output_dtype):
                assert (
                    keras.backend.standardize_dtype(mixed_output.dtype) == compute_dtype
                ), f"{policy}: output dtype {mixed_output.dtype}"
            for weight in mixed.weights:
                if _is_float(weight.dtype):
                    assert keras.backend.standardize_dtype(weight.dtype) == "float32"
            assert np.all(np.isfinite(to_numpy(mixed_output).astype("float32")))

    if tmp_path is not None:
        model = build_model(layer_cls(**init_kwargs), args, call_kwargs)
        assert_save_load_equal(model, args if len(args) > 1 else args[0], tmp_path)
    return layer


def assert_loads_across_backends(model, input_data, tmp_path, atol=1e-5):
    """Saves `model` here and checks the two other backends load it equal.

    Each other backend runs in its own process (a Keras backend is fixed per
    process) through `tests/cross_backend_check.py`, with `safe_mode=True`.
    """
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    args = _as_tuple(input_data)
    expected = to_numpy(model(list(args)) if len(args) > 1 else model(args[0]))
    data_path = os.path.join(str(tmp_path), "data.npz")
    np.savez(
        data_path,
        expected=expected,
        **{f"input_{index}": array for index, array in enumerate(args)},
    )
    current = keras.backend.backend()
    for backend in BACKENDS:
        if backend == current:
            continue
        env = dict(
            os.environ,
            KERAS_BACKEND=backend,
            TF_CPP_MIN_LOG_LEVEL="3",
            PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]),
        )
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO_ROOT, "tests", "cross_backend_check.py"),
                path,
                data_path,
                str(atol),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"saved under {current}, loading under {backend} failed:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )

import inspect

import keras

import keras_posenc
from keras_posenc import layers


def test_every_public_layer_imports_and_is_registered():
    names = layers.__all__
    assert names
    for name in names:
        obj = getattr(layers, name)
        if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer):
            assert keras.saving.get_registered_object(f"keras_posenc>{name}") is obj
            assert obj.__doc__ and "Example:" in obj.__doc__, name


def test_version():
    assert keras_posenc.__version__.count(".") == 2

"""keras-posenc: positional encodings for Transformers as Keras 3 layers."""

from keras_posenc import datasets
from keras_posenc import export
from keras_posenc import layers
from keras_posenc import models
from keras_posenc import positions
from keras_posenc import preprocessing
from keras_posenc import tokenizers
from keras_posenc import utils
from keras_posenc.version import __version__

__all__ = [
    "datasets",
    "export",
    "layers",
    "models",
    "positions",
    "preprocessing",
    "tokenizers",
    "utils",
    "__version__",
]

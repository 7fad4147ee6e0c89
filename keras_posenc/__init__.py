"""keras-posenc: positional encodings for Transformers as Keras 3 layers."""

from keras_posenc import layers
from keras_posenc import utils
from keras_posenc.version import __version__

__all__ = ["layers", "utils", "__version__"]

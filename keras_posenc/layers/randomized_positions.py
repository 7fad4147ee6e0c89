import keras
from keras import ops

from keras_posenc.utils.validation import check_layer_keyword_arguments
from keras_posenc.utils.validation import check_non_negative_int
from keras_posenc.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_posenc")
class RandomizedPositions(keras.layers.Layer):
    """Randomized positional encodings (Ruoss et al., 2023), as position ids.

    In training, each example gets a sorted random subset of
    `range(max_position)` as the positions of its `sequence_length` tokens,
    so a model trained on short sequences has seen the positions of long
    ones; at inference the positions are `0, 1, ..., sequence_length - 1`.
    Pass the result as `positions=` to any position layer, attention layer or
    block (it works with every scheme), or use the ready models'
    `randomize_positions=max_position`.

    Args:
        max_position: int. The range positions are drawn from, larger than
            the longest sequence met at test time (the paper uses 2,048 for
            test lengths up to 500).
        seed: int or None. Seed of the draws.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: any tensor `(batch_size, sequence_length, ...)`; only its
            first two sizes are read.
        training: bool. Random positions if True, else `arange`.

    Returns:
        Int32 positions `(batch_size, sequence_length)`, strictly increasing
        along each row.

    Example:

    >>> import numpy as np
    >>> import keras_posenc
    >>> layer = keras_posenc.layers.RandomizedPositions(max_position=100, seed=0)
    >>> ids = np.ones((2, 5), "int32")
    >>> keras_posenc.utils.to_numpy(layer(ids)).tolist()
    [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    >>> random = keras_posenc.utils.to_numpy(layer(ids, training=True))
    >>> bool((np.diff(random, axis=1) > 0).all() and random.max() < 100)
    True

    References:
        - [Ruoss et al., 2023](https://arxiv.org/abs/2305.16843)
    """

    def __init__(self, max_position, seed=None, **kwargs):
        check_positive_int("max_position", max_position)
        if seed is not None:
            check_non_negative_int("seed", seed)
        check_layer_keyword_arguments(self, kwargs)
        super().__init__(**kwargs)
        self.max_position = int(max_position)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        length = inputs.shape[1]
        if length is not None and length > self.max_position:
            raise ValueError(
                f"RandomizedPositions draws {length} positions from "
                f"range(max_position={self.max_position}): the sequence is "
                f"longer. Received: inputs.shape={tuple(inputs.shape)}"
            )
        shape = ops.shape(inputs)
        batch_size, length = shape[0], shape[1]
        if not training:
            positions = ops.arange(length, dtype="int32")
            return ops.broadcast_to(positions[None], (batch_size, length))
        # The top `length` of `max_position` uniform scores: a uniformly
        # random subset, then sorted.
        scores = keras.random.uniform(
            (batch_size, self.max_position), seed=self.seed_generator
        )
        _, chosen = ops.top_k(scores, k=length, sorted=False)
        return ops.cast(ops.sort(chosen, axis=-1), "int32")

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2])

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(tuple(inputs.shape[:2]), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update({"max_position": self.max_position, "seed": self.seed})
        return config

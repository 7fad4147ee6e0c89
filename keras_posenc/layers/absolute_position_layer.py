"""Base class of the absolute position layers: merge modes, shapes and masks."""

import keras
from keras import ops

from keras_posenc.utils.positions import check_positions_shape
from keras_posenc.utils.positions import mask_positions
from keras_posenc.utils.validation import check_float_tensor
from keras_posenc.utils.validation import check_layer_keyword_arguments
from keras_posenc.utils.validation import check_one_of
from keras_posenc.utils.validation import check_positive_int

MERGE_MODES = ("add", "concat", None)


class AbsolutePositionLayer(keras.layers.Layer):
    """Shared logic of layers that attach one vector per position to `inputs`.

    `inputs` have shape `(batch, ..., seq, feature_dim)`: rank 3 or more, the
    batch on axis 0 and the sequence on axis -2 (as in
    `keras_hub.layers.SinePositionEncoding` and `PositionEmbedding`). The
    middle axes, if any (heads, patches, ...), all get the same encoding.

    Subclasses implement `encode(sequence_length, start_index, positions)`,
    returning the encoding in the compute dtype with shape `(seq, width)` or,
    for `positions` of shape `(batch, seq)`, `(batch, seq, width)`, where
    `width` is `self.encoding_dim` (set in `build`). `call` broadcasts it
    over the middle axes, keeping its batch on axis 0.

    Args:
        merge: `"add"`, `"concat"` or `None`. How the encoding meets `inputs`:
            `"add"` returns `inputs + encoding`, `"concat"` concatenates the
            encoding to `inputs` on the last axis, `None` returns the encoding
            alone, broadcast to `inputs.shape[:-1] + (width,)`. Defaults to
            `"add"`.
        output_dim: int or None. Width of the encoding for `"concat"` and
            `None`; defaults to the width of `inputs`. With `"add"` it must be
            None or equal to the width of `inputs`.
    """

    # Whether `positions` must be integers (a table lookup) or may be
    # fractional (a continuous function of the position).
    integer_positions = True

    def __init__(self, merge="add", output_dim=None, **kwargs):
        check_one_of("merge", merge, MERGE_MODES)
        check_positive_int("output_dim", output_dim, allow_none=True)
        check_layer_keyword_arguments(self, kwargs)
        super().__init__(**kwargs)
        self.merge = merge
        self.output_dim = output_dim
        self.supports_masking = True
        self.encoding_dim = None

    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(
                f"{self.__class__.__name__} expects inputs of rank 3 or more: "
                "shape (batch_size, sequence_length, feature_dim), or "
                "(batch_size, ..., sequence_length, feature_dim) with the "
                f"sequence on axis -2. Received: inputs.shape={input_shape}"
            )
        feature_dim = input_shape[-1]
        if feature_dim is None:
            raise ValueError(
                f"{self.__class__.__name__} needs a known feature dimension (the "
                f"last axis of `inputs`). Received: inputs.shape={input_shape}"
            )
        if self.merge == "add":
            if self.output_dim is not None and self.output_dim != feature_dim:
                raise ValueError(
                    'With merge="add", `output_dim` must be None or equal to the '
                    f"width of `inputs` ({feature_dim}). "
                    f"Received: output_dim={self.output_dim}"
                )
            return feature_dim
        return self.output_dim or feature_dim

    def build(self, input_shape):
        self.input_dim = input_shape[-1]
        self.encoding_dim = self._check_input_shape(input_shape)

    def encode(self, sequence_length, start_index, positions):
        raise NotImplementedError

    def call(self, inputs, start_index=0, positions=None, mask=None):
        check_float_tensor(self.__class__.__name__, "inputs", inputs)
        # `_check_input_shape` ran in `build`: the rank is at least 3.
        rank = len(inputs.shape)
        if positions is not None:
            check_positions_shape(
                positions,
                inputs.shape[-2],
                inputs.shape[0],
                integer=self.integer_positions,
            )
            positions = mask_positions(positions, mask)
        shape = ops.shape(inputs)
        encoding = self.encode(shape[-2], start_index, positions)
        if len(encoding.shape) == 3:
            # Per-example positions: (batch, seq, width) -> (batch, 1, ..., 1,
            # seq, width), so that the batch stays on axis 0 (right-aligned
            # broadcasting alone would pair it with axis -3).
            for _ in range(rank - 3):
                encoding = ops.expand_dims(encoding, 1)
        if self.merge == "add":
            return ops.add(inputs, ops.cast(encoding, inputs.dtype))
        encoding = ops.broadcast_to(encoding, tuple(shape[:-1]) + (self.encoding_dim,))
        if self.merge == "concat":
            return ops.concatenate([inputs, ops.cast(encoding, inputs.dtype)], axis=-1)
        return encoding

    def compute_output_spec(self, inputs, *args, **kwargs):
        # Symbolic calls use `compute_output_shape` and skip `call`: check here.
        check_float_tensor(self.__class__.__name__, "inputs", inputs)
        return super().compute_output_spec(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        width = self._check_input_shape(input_shape)
        if self.merge == "concat":
            width = input_shape[-1] + width
        return tuple(input_shape[:-1]) + (width,)

    def get_config(self):
        config = super().get_config()
        config.update({"merge": self.merge, "output_dim": self.output_dim})
        return config

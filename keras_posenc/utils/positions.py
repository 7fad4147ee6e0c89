"""Turns a layer's `start_index` / `positions` call arguments into position ids.

Every position layer takes `call(inputs, start_index=0, positions=None)`:
- `start_index` (a Python int or a scalar integer tensor) gives positions
  `start_index, start_index + 1, ...`, as in cached decoding;
- `positions`, of shape `(seq,)` or `(batch, seq)`, overrides it (packed or
  left-padded sequences).
"""

import numbers

from keras import ops


def check_start_index(start_index):
    """Raises for a negative or non-integer Python `start_index`.

    Tensors cannot be checked here (their value is unknown while tracing).
    """
    if isinstance(start_index, bool) or isinstance(start_index, float):
        raise ValueError(
            "`start_index` must be a non-negative integer or an integer tensor. "
            f"Received: start_index={start_index!r}"
        )
    if isinstance(start_index, numbers.Integral) and start_index < 0:
        raise ValueError(
            "`start_index` must be a non-negative integer. "
            f"Received: start_index={start_index}"
        )


def check_positions_shape(positions, sequence_length, batch_size=None):
    """Raises if `positions` is not `(seq,)` or `(batch, seq)` for these inputs."""
    shape = tuple(positions.shape)
    if len(shape) not in (1, 2):
        raise ValueError(
            "`positions` must have shape (sequence_length,) or "
            f"(batch_size, sequence_length). Received: positions.shape={shape}"
        )
    if (
        shape[-1] is not None
        and sequence_length is not None
        and shape[-1] != sequence_length
    ):
        raise ValueError(
            "The last axis of `positions` must equal the sequence length "
            f"{sequence_length}. Received: positions.shape={shape}"
        )
    if (
        len(shape) == 2
        and shape[0] is not None
        and batch_size is not None
        and shape[0] not in (1, batch_size)
    ):
        raise ValueError(
            f"The first axis of `positions` must be 1 or the batch size {batch_size}. "
            f"Received: positions.shape={shape}"
        )


def position_ids(sequence_length, start_index=0, positions=None, dtype="int32"):
    """Position ids of shape `(seq,)` or `(batch, seq)` in `dtype`.

    Args:
        sequence_length: int or scalar tensor. Length of the sequence.
        start_index: int or scalar integer tensor. First position when
            `positions` is None.
        positions: optional integer tensor `(seq,)` or `(batch, seq)`.
        dtype: dtype of the result; float32 for angles, int32 for lookups.
    """
    if positions is not None:
        return ops.cast(positions, dtype)
    check_start_index(start_index)
    ids = ops.arange(sequence_length, dtype="int32")
    if not (isinstance(start_index, numbers.Integral) and start_index == 0):
        ids = ids + ops.cast(start_index, "int32")
    return ops.cast(ids, dtype)

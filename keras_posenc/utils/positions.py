"""Turns a layer's `start_index` / `positions` call arguments into position ids.

Every position layer takes `call(inputs, start_index=0, positions=None)`:
- `start_index` (a Python int or a scalar integer tensor) gives positions
  `start_index, start_index + 1, ...`, as in cached decoding;
- `positions`, of shape `(seq,)` or `(batch, seq)`, overrides it (packed or
  left-padded sequences).
"""

import numbers

import keras
import numpy as np
from keras import ops

from keras_posenc.utils.validation import check_integer_tensor


def check_start_index(start_index, name="start_index"):
    """Raises for a `start_index` that is not a non-negative integer.

    A Python int is checked for its value. A tensor (or numpy scalar, which
    Keras turns into a tensor) is checked for its dtype and for holding one
    value; its value itself is unknown while tracing and is not checked.
    """
    if hasattr(start_index, "dtype") and hasattr(start_index, "shape"):
        check_integer_tensor(name, start_index)
        shape = tuple(start_index.shape)
        if any(isinstance(dim, int) and dim != 1 for dim in shape) or len(shape) > 1:
            raise ValueError(
                f"`{name}` must be a scalar. Received: {name}.shape={shape}"
            )
        return
    if isinstance(start_index, bool) or not isinstance(start_index, numbers.Integral):
        raise ValueError(
            f"`{name}` must be a non-negative integer or an integer tensor. "
            f"Received: {name}={start_index!r}"
        )
    if start_index < 0:
        raise ValueError(
            f"`{name}` must be a non-negative integer. Received: {name}={start_index}"
        )


def check_positions_shape(
    positions, sequence_length, batch_size=None, integer=True, num_axes=1
):
    """Raises if `positions` is not `(seq,)` or `(batch, seq)` for these inputs.

    With `integer=True` (layers that look positions up or bucket them) a float
    `positions` raises a `TypeError`; layers whose encoding is a continuous
    function of the position (sinusoidal, rotary, xPos) pass `integer=False`
    and accept fractional positions. Only the static parts of the shapes are
    compared: an axis that is unknown while tracing (`None`) cannot be checked.
    With `num_axes > 1`, `(batch, seq, num_axes)` is accepted too.
    """
    if integer:
        check_integer_tensor("positions", positions)
    shape = tuple(positions.shape)
    if num_axes > 1 and len(shape) == 3:
        # (batch, seq, num_axes): several position axes (multi-axis rotary).
        if shape[-1] is not None and shape[-1] != num_axes:
            raise ValueError(
                f"The last axis of 3-D `positions` must hold the {num_axes} "
                f"position axes. Received: positions.shape={shape}"
            )
        shape = shape[:2]
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


def check_key_positions_shape(key_positions, key_length, batch_size=None, num_axes=1):
    """`check_positions_shape` for `key_positions`, naming that argument."""
    try:
        check_positions_shape(key_positions, key_length, batch_size, num_axes=num_axes)
    except (ValueError, TypeError) as error:
        message = str(error).replace("`positions`", "`key_positions`")
        message = message.replace("positions.", "key_positions.")
        raise type(error)(message.replace("sequence length", "key length")) from None


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


def default_key_positions(positions, key_positions, query_length, key_length):
    """The key positions a self-attention call means when only `positions` is given.

    `key_positions` wins when given. Otherwise the keys of a self-attention
    call are the query tokens, so they take `positions`; with neither, the
    keys are at `0 ... S - 1` (returned as None: the caller uses `arange`).
    Cross-attention (key length other than the query length) with `positions`
    but no `key_positions` cannot be inferred, and raises.

    Args:
        positions: the call's query `positions`, or None.
        key_positions: the call's `key_positions`, or None.
        query_length, key_length: static lengths (None while unknown: the
            check then cannot run).
    """
    if key_positions is not None or positions is None:
        return key_positions
    if None not in (query_length, key_length) and query_length != key_length:
        raise ValueError(
            "`key_positions` is needed when `positions` is given and the key "
            f"length ({key_length}) differs from the query length "
            f"({query_length}), as in cross-attention: the key positions "
            "cannot be inferred. Received: key_positions=None"
        )
    return positions


def concrete_value(x):
    """`x` as a numpy array when its value is known now (eager), else None.

    None for symbolic `keras.Input`s and for tensors inside a traced or
    compiled function (a JAX tracer, a TensorFlow graph tensor).
    """
    if isinstance(x, np.ndarray):
        return x
    if x is None or isinstance(x, keras.KerasTensor):
        return None
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except (TypeError, ValueError, NotImplementedError, AttributeError, RuntimeError):
        return None


def mask_positions(positions, mask):
    """`positions` with 0 at the masked (padding) slots of a `(batch, seq)` mask.

    Left padding numbered by `cumsum(mask) - 1` gives pads position -1; a
    padding slot never counts, but a NaN or out-of-range lookup there would
    reach the valid tokens through attention (0 * NaN), so pads take row 0.
    """
    if mask is None or positions is None or len(mask.shape) != 2:
        return positions
    return ops.where(mask, positions, ops.zeros_like(positions))

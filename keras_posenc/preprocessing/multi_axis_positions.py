"""Position ids with one position per axis, for `MultiAxisRotaryEmbedding`.

Numpy helpers, run once per sequence in the input pipeline:
`multi_axis_position_ids` gives the (t, h, w) ids of a text and vision
sequence as Qwen2-VL numbers it, `grid_position_ids` the (row, column) ids of
image patches for 2-D axial RoPE.
"""

import numbers

import numpy as np

from keras_posenc.utils.validation import check_positive_int


def _is_count(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_segment(segment):
    """`segment` as an int (text tokens) or a `(t, h, w)` tuple of ints."""
    if _is_count(segment):
        if segment < 0:
            raise ValueError(
                "A text item of `segments` must be a non-negative number of "
                f"tokens. Received: {segment!r}"
            )
        return int(segment)
    if (
        isinstance(segment, (tuple, list))
        and len(segment) == 3
        and all(_is_count(size) and size > 0 for size in segment)
    ):
        return tuple(int(size) for size in segment)
    raise ValueError(
        "Each item of `segments` must be an int (that many text tokens) or a "
        "tuple (t, h, w) of three positive ints (a vision grid after spatial "
        f"merging). Received: {segment!r}"
    )


def multi_axis_position_ids(segments):
    """(t, h, w) position ids of a text and vision sequence, as Qwen2-VL.

    The ids of HF transformers' `Qwen2VLModel.get_rope_index` for one
    sequence: a text token has the same id on all three axes, one more than
    the largest id before it. A vision grid of `t x h x w` tokens (after the
    spatial merging, in t-major, then h, then w order) starting at offset `o`
    (one more than the largest id before it) gives its token `(ti, hi, wi)`
    the ids `(o + ti, o + hi, o + wi)`; the segment after it starts at the
    grid's largest id plus one, `o + max(t, h, w)`. The vision start and end
    tokens around a grid are text tokens. (Qwen2.5-VL scales the time index
    of videos by the seconds per grid step; such ids are not produced here.)

    Args:
        segments: list of items in sequence order, each an int (that many
            text tokens) or a tuple `(t, h, w)` of positive ints (a vision
            grid).

    Returns:
        An int32 numpy array of shape `(length, 3)`, `length` the number of
        tokens, for the `positions` of `MultiAxisRotaryEmbedding` (which
        takes a batch axis in front too).

    Example:

    >>> from keras_posenc.preprocessing import multi_axis_position_ids
    >>> multi_axis_position_ids([2, (1, 2, 2), 1]).T
    array([[0, 1, 2, 2, 2, 2, 4],
           [0, 1, 2, 2, 3, 3, 4],
           [0, 1, 2, 3, 2, 3, 4]], dtype=int32)
    """
    if not isinstance(segments, (list, tuple)):
        raise ValueError(
            "`segments` must be a list of ints (text tokens) and (t, h, w) "
            f"tuples (vision grids). Received: segments={segments!r:.80}"
        )
    blocks = [np.zeros((0, 3), dtype="int64")]
    start = 0
    for segment in map(_check_segment, segments):
        if isinstance(segment, int):
            text = np.arange(start, start + segment)
            blocks.append(np.repeat(text[:, None], 3, axis=1))
            start += segment
        else:
            # (t, h, w, 3) ids in t-major order, flattened to (t * h * w, 3).
            grid = np.stack(
                np.meshgrid(*map(np.arange, segment), indexing="ij"), axis=-1
            )
            blocks.append(grid.reshape(-1, 3) + start)
            start += max(segment)
    return np.concatenate(blocks).astype("int32")


def grid_position_ids(height, width):
    """(row, column) position ids of a `height x width` grid of patches.

    The patches are numbered row by row (row-major, as a ViT flattens its
    patch grid), for 2-D axial RoPE (`MultiAxisRotaryEmbedding` with two
    sections). rope-vit's `init_t_xy` numbers them the same way but gives
    the column first: `grid_position_ids(h, w)[:, ::-1]` are its `(t_x,
    t_y)`.

    Args:
        height: int. Number of patch rows.
        width: int. Number of patch columns.

    Returns:
        An int32 numpy array of shape `(height * width, 2)`.

    Example:

    >>> from keras_posenc.preprocessing import grid_position_ids
    >>> grid_position_ids(2, 3).T
    array([[0, 0, 0, 1, 1, 1],
           [0, 1, 2, 0, 1, 2]], dtype=int32)
    """
    check_positive_int("height", height)
    check_positive_int("width", width)
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows.ravel(), columns.ravel()], axis=-1).astype("int32")

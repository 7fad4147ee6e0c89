"""Attention masks: padding, explicit and causal masks merged in one place.

Shapes: a query padding mask is `[B, T]`, a key/value padding mask `[B, S]`,
an explicit attention mask `[B, T, S]`; the merged mask is boolean
`[B or 1, T, S]` with True where a query may attend to a key.
"""

from keras import ops

# Added to the bias of masked slots before a fused kernel: large, yet finite
# in float16 too, so a fully masked row stays finite.
MASK_BIAS = -3e4
# Logit of masked slots in float32 (explicit attention, samplers): softmax
# gives them exactly zero weight.
MASKED_LOGIT = -1e9


def causal_mask(query_slots, key_length):
    """`[1, T, S]` bool mask, True where key slot `<=` query slot.

    Causality is by slot in the sequence or cache, never by position id, so
    packed or left-padded `positions` cannot let a query see a later token.

    Args:
        query_slots: int tensor `(T,)`, the slots of the queries (with a cache,
            `cache_update_index + arange(T)`).
        key_length: int or scalar tensor `S`, the number of key slots.
    """
    key_slots = ops.arange(key_length, dtype="int32")
    mask = ops.expand_dims(key_slots, 0) <= ops.expand_dims(
        ops.cast(query_slots, "int32"), 1
    )
    return ops.expand_dims(mask, 0)


def _broadcasts(shape, target):
    """Whether static `shape` broadcasts to `target` (None: unknown, passes)."""
    if len(shape) > len(target):
        return False
    for dim, want in zip(reversed(shape), reversed(target)):
        if dim is None or want is None or dim == 1 or dim == want:
            continue
        return False
    return True


def check_padding_mask(name, mask, batch_size, length):
    """Raises a `ValueError` unless `mask` is `[B, length]` (batch axis 1 allowed).

    Axes unknown while tracing (`None`) cannot be checked; a mismatch there
    fails inside the attention op instead.
    """
    if mask is None:
        return
    shape = tuple(mask.shape)
    if len(shape) != 2 or not _broadcasts(shape, (batch_size, length)):
        raise ValueError(
            f"`{name}` must have shape (batch_size, sequence_length) = "
            f"{(batch_size, length)}. Received: {name}.shape={shape}"
        )


def check_attention_mask(name, mask, batch_size, query_length, key_length):
    """Raises a `ValueError` unless `mask` broadcasts to `[B, T, S]`.

    Axes unknown while tracing (`None`) cannot be checked.
    """
    if mask is None:
        return
    shape = tuple(mask.shape)
    target = (batch_size, query_length, key_length)
    if not _broadcasts(shape, target):
        raise ValueError(
            f"`{name}` must broadcast to (batch_size, query_length, key_length) "
            f"= {target}. Received: {name}.shape={shape}"
        )


def merge_attention_masks(
    query_mask=None, key_mask=None, attention_mask=None, causal=None
):
    """Logical AND of the given masks as one `[B or 1, T, S]` bool mask, or None.

    Args:
        query_mask: `[B, T]` padding mask of the queries.
        key_mask: `[B, S]` padding mask of the keys/values.
        attention_mask: `[B, T, S]` (or broadcastable) explicit mask.
        causal: `[1, T, S]` causal mask from `causal_mask`.
    """
    mask = None

    def _and(current, new):
        new = ops.cast(new, "bool")
        return new if current is None else ops.logical_and(current, new)

    if query_mask is not None:
        mask = _and(mask, ops.expand_dims(query_mask, -1))  # [B, T, 1]
    if key_mask is not None:
        mask = _and(mask, ops.expand_dims(key_mask, -2))  # [B, 1, S]
    if attention_mask is not None:
        mask = _and(mask, attention_mask)
    if causal is not None:
        mask = _and(mask, causal)
    return mask


def clear_keras_masks(*tensors):
    """Removes Keras masks from `tensors` once a layer has taken them in.

    An attention layer receives its masks as `query_mask`/`value_mask` and
    applies them itself; left on the tensors they would reach the projection
    sublayers, which do not support masking and warn. Keras 3.15 has no public
    setter, so this is the one place that imports a private Keras module (as
    Keras' own `MultiHeadAttention` does).
    """
    from keras.src.backend.common.masking import set_keras_mask

    for tensor in tensors:
        if tensor is not None:
            set_keras_mask(tensor, None)

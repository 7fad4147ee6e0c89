"""Attention masks: padding, explicit and causal masks merged in one place.

Shapes: a query padding mask is `[B, T]`, a key/value padding mask `[B, S]`,
an explicit attention mask `[B, T, S]`; the merged mask is boolean
`[B or 1, T, S]` with True where a query may attend to a key.
"""

from keras import ops


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

"""How a model's `position=` name splits into an embedding and an attention scheme.

Absolute schemes live in the token embedding (`TokenAndPositionEmbedding`);
relative schemes live in every self-attention layer; `"none"` (NoPE) in neither.
"""

from keras_posenc.utils.validation import check_one_of

ABSOLUTE_POSITIONS = ("sinusoidal", "sinusoidal_concat", "learned", "learned_concat")
RELATIVE_POSITIONS = ("shaw", "t5", "alibi", "rotary", "xpos")
MODEL_POSITIONS = ABSOLUTE_POSITIONS + RELATIVE_POSITIONS + ("none",)


def check_model_position(position):
    return check_one_of("position", position, MODEL_POSITIONS)


def embedding_arguments(position, hidden_dim):
    """Keyword arguments of `TokenAndPositionEmbedding` for a model scheme.

    With a `_concat` scheme the token embedding takes `3/4` of `hidden_dim`
    and the position encoding the remaining quarter, so every scheme gives
    the blocks the same width.
    """
    check_model_position(position)
    if position in ABSOLUTE_POSITIONS:
        kind, _, merge = position.partition("_")
        if merge == "concat":
            position_dim = max(hidden_dim // 4, 1)
            return {
                "position": kind,
                "merge": "concat",
                "embedding_dim": hidden_dim - position_dim,
                "position_dim": position_dim,
            }
        return {"position": kind, "merge": "add", "embedding_dim": hidden_dim}
    return {"position": "none", "merge": "add", "embedding_dim": hidden_dim}


def attention_position(position):
    """The `PositionalMultiHeadAttention` scheme for a model scheme, or None."""
    check_model_position(position)
    return position if position in RELATIVE_POSITIONS else None

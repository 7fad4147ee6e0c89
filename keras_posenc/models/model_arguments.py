"""Constructor checks that every ready model shares."""

from keras_posenc.models.position_schemes import check_model_position
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import check_rate


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


def check_transformer_arguments(
    vocabulary_size,
    max_length,
    hidden_dim,
    num_layers,
    num_heads,
    intermediate_dim,
    dropout,
    position,
    normalize_first,
):
    """Raises a `ValueError` naming the first invalid model argument."""
    check_positive_int("vocabulary_size", vocabulary_size)
    check_positive_int("max_length", max_length)
    check_positive_int("hidden_dim", hidden_dim)
    check_positive_int("num_layers", num_layers)
    check_positive_int("num_heads", num_heads)
    check_positive_int("intermediate_dim", intermediate_dim)
    check_rate("dropout", dropout)
    check_model_position(position)
    check_bool("normalize_first", normalize_first)
    if vocabulary_size < 2:
        raise ValueError(
            "`vocabulary_size` must be at least 2 (id 0 is padding). "
            f"Received: vocabulary_size={vocabulary_size}"
        )
    if hidden_dim % num_heads:
        raise ValueError(
            "`hidden_dim` must be divisible by `num_heads`. "
            f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    if position in ("rotary", "xpos") and (hidden_dim // num_heads) % 2:
        raise ValueError(
            f"With position={position!r}, the head size `hidden_dim` / "
            f"`num_heads` must be even. Received: hidden_dim={hidden_dim}, "
            f"num_heads={num_heads}"
        )
    if position.endswith("_concat") and hidden_dim < 2:
        raise ValueError(
            f"With position={position!r}, `hidden_dim` must be at least 2 (it "
            f"is split between tokens and positions). Received: "
            f"hidden_dim={hidden_dim}"
        )

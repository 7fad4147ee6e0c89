"""One resolver for position schemes, in the manner of `keras.initializers.get`.

`get(identifier, **defaults)` turns what a user passes as `position=` into a
layer: a scheme name, a serialized layer config, a short config
`{"class_name": <scheme name>, "config": {...}}`, or a layer instance. Every
layer and model of the library resolves its `position` argument here.

Absolute schemes (subclasses of `AbsolutePositionLayer`: sinusoidal, learned)
belong in the token embedding; attention schemes (subclasses of
`keras_posenc.layers.AttentionPosition`: Shaw, T5, ALiBi, rotary, xPos,
FIRE, Kerple, the forgetting bias, CoPE, multi-axis rotary, and any user
subclass) inside every self-attention layer.
"""

import copy

import keras

from keras_posenc.layers.absolute_position_layer import AbsolutePositionLayer
from keras_posenc.layers.alibi_bias import ALiBiBias
from keras_posenc.layers.attention_position import AttentionPosition
from keras_posenc.layers.contextual_position_bias import ContextualPositionBias
from keras_posenc.layers.fire_bias import FIREBias
from keras_posenc.layers.forgetting_bias import ForgettingBias
from keras_posenc.layers.kerple_bias import KerpleBias
from keras_posenc.layers.learned_position_embedding import LearnedPositionEmbedding
from keras_posenc.layers.multi_axis_rotary_embedding import MultiAxisRotaryEmbedding
from keras_posenc.layers.relative_position_embedding import RelativePositionEmbedding
from keras_posenc.layers.rotary_embedding import RotaryEmbedding
from keras_posenc.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from keras_posenc.layers.t5_relative_position_bias import T5RelativePositionBias
from keras_posenc.layers.xpos import XPos


def _needs(name, defaults, key):
    if defaults.get(key) is None:
        raise ValueError(
            f"`{key}` is needed to build position={name!r}: pass it to "
            f"`keras_posenc.positions.get({name!r}, {key}=...)`."
        )
    return defaults[key]


# name -> (layer class, its keyword arguments from the resolver's defaults).
# ALiBi is symmetric: on the keys a causal mask keeps it equals the causal
# form, so one name serves encoders and decoders. T5's buckets follow
# `causal` (bidirectional in encoders, causal in decoders, as in T5).
SCHEMES = {
    "sinusoidal": (SinusoidalPositionEncoding, lambda d: {"merge": "add"}),
    "sinusoidal_concat": (SinusoidalPositionEncoding, lambda d: {"merge": "concat"}),
    "learned": (
        LearnedPositionEmbedding,
        lambda d: {"max_length": _needs("learned", d, "max_length"), "merge": "add"},
    ),
    "learned_concat": (
        LearnedPositionEmbedding,
        lambda d: {
            "max_length": _needs("learned_concat", d, "max_length"),
            "merge": "concat",
        },
    ),
    "shaw": (RelativePositionEmbedding, lambda d: {"max_distance": 16}),
    "t5": (
        T5RelativePositionBias,
        lambda d: {
            "num_heads": _needs("t5", d, "num_heads"),
            "bidirectional": not d.get("causal", False),
        },
    ),
    "alibi": (
        ALiBiBias,
        lambda d: {"num_heads": _needs("alibi", d, "num_heads"), "causal": False},
    ),
    "rotary": (RotaryEmbedding, lambda d: {}),
    "xpos": (XPos, lambda d: {}),
    "fire": (FIREBias, lambda d: {"num_heads": _needs("fire", d, "num_heads")}),
    "kerple": (KerpleBias, lambda d: {"num_heads": _needs("kerple", d, "num_heads")}),
    "forgetting": (
        ForgettingBias,
        lambda d: {"num_heads": _needs("forgetting", d, "num_heads")},
    ),
    "cope": (ContextualPositionBias, lambda d: {}),
    "mrope": (MultiAxisRotaryEmbedding, lambda d: {}),
}
NAMES = tuple(SCHEMES) + ("none",)
ABSOLUTE_NAMES = tuple(
    name for name, (cls, _) in SCHEMES.items() if issubclass(cls, AbsolutePositionLayer)
)
ATTENTION_NAMES = tuple(
    name for name, (cls, _) in SCHEMES.items() if issubclass(cls, AttentionPosition)
)
DEFAULTS = ("num_heads", "max_length", "causal", "dtype", "name")


def _unknown(identifier):
    return ValueError(
        f"`position` must be one of {list(NAMES)}, None, a layer config, "
        "`{'class_name': <one of those names>, 'config': {...}}`, or a layer "
        "instance (a subclass of keras_posenc.layers.AttentionPosition or an "
        f"absolute position layer). Received: position={identifier!r}"
    )


def get(identifier, **defaults):
    """The position layer for `identifier`, or None for `"none"` / None.

    Args:
        identifier: a scheme name (one of `NAMES`), None, a layer instance
            (returned as it is), a config from `serialize`, or a short config
            `{"class_name": name, "config": {...}}` whose arguments override
            the scheme's defaults, e.g. `{"class_name": "rotary", "config":
            {"scaling": "yarn", "scaling_factor": 4.0, "original_max_length":
            512}}`.
        **defaults: what the caller knows and a scheme may need: `num_heads`
            (T5, ALiBi), `max_length` (learned tables), `causal` (T5's
            buckets), `dtype` and `name` of the new layer. Schemes take only
            what they use.

    Returns:
        A layer (`AttentionPosition` or absolute position layer) or None.

    Example:

    >>> import keras_posenc
    >>> layer = keras_posenc.positions.get("t5", num_heads=4, causal=True)
    >>> layer.bidirectional
    False
    >>> rotary = keras_posenc.positions.get(
    ...     {"class_name": "rotary", "config": {"scaling": "linear",
    ...                                         "scaling_factor": 2.0}})
    >>> rotary.scaling
    'linear'
    >>> keras_posenc.positions.get("none") is None
    True
    """
    unknown = sorted(set(defaults) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"`keras_posenc.positions.get` got unexpected defaults {unknown}; "
            f"it takes {list(DEFAULTS)}."
        )
    if identifier is None or (isinstance(identifier, str) and identifier == "none"):
        return None
    if isinstance(identifier, keras.layers.Layer):
        _check_layer(identifier)
        return identifier
    if isinstance(identifier, str):
        if identifier not in SCHEMES:
            raise _unknown(identifier)
        return _build(identifier, {}, defaults)
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        if isinstance(name, str) and name in SCHEMES:
            config = identifier.get("config", {})
            if not isinstance(config, dict) or set(identifier) - {
                "class_name",
                "config",
            }:
                raise _unknown(identifier)
            return _build(name, config, defaults)
        if name == "none":
            return None
        try:
            layer = keras.saving.deserialize_keras_object(copy.deepcopy(identifier))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{_unknown(identifier)} ({error})") from None
        _check_layer(layer)
        return layer
    raise _unknown(identifier)


ATTENTION_KIND = (
    "an `AttentionPosition` layer (absolute encodings belong in the token embedding)"
)
ABSOLUTE_KIND = (
    "a sinusoidal or learned layer with merge='add' or 'concat' (attention "
    "schemes belong in the attention layers)"
)


def get_attention(identifier, **defaults):
    """`get` for an attention layer's `position`: an `AttentionPosition` or None.

    Raises a `ValueError` listing the attention scheme names otherwise.
    """
    _check_name(identifier, ATTENTION_NAMES, ATTENTION_KIND)
    layer = get(identifier, **defaults)
    if layer is not None and not is_attention_position(layer):
        raise _wrong_kind(identifier, ATTENTION_NAMES, ATTENTION_KIND)
    return layer


def get_absolute(identifier, **defaults):
    """`get` for a token embedding's `position`: an absolute layer or None.

    Raises a `ValueError` listing the absolute scheme names otherwise.
    """
    _check_name(identifier, ABSOLUTE_NAMES, ABSOLUTE_KIND)
    layer = get(identifier, **defaults)
    if layer is not None and (is_attention_position(layer) or layer.merge is None):
        raise _wrong_kind(identifier, ABSOLUTE_NAMES, ABSOLUTE_KIND)
    return layer


def _check_name(identifier, names, layer_kind):
    """Refuses a string that is not one of `names` (or "none") up front."""
    if isinstance(identifier, str) and identifier not in names + ("none",):
        raise _wrong_kind(identifier, names, layer_kind)


def _wrong_kind(identifier, names, layer_kind):
    return ValueError(
        f"`position` must be one of {list(names) + ['none']}, None, a config, "
        f"or {layer_kind}. Received: position={identifier!r}"
    )


def _build(name, config, defaults):
    cls, arguments = SCHEMES[name]
    # The config's own values (e.g. its `num_heads`) stand in for defaults.
    kwargs = arguments({**defaults, **config})
    for key in ("dtype", "name"):
        if defaults.get(key) is not None:
            kwargs[key] = defaults[key]
    kwargs.update(config)
    return cls(**kwargs)


def _check_layer(layer):
    if not isinstance(layer, (AttentionPosition, AbsolutePositionLayer)):
        raise _unknown(layer)


def serialize(position):
    """A name stays a name; a layer becomes its Keras config; None is `"none"`.

    The config leaves out the layer's build state, so the layer it gives
    back is unbuilt, like a layer the user creates.
    """
    if position is None:
        return "none"
    if isinstance(position, str):
        return position
    if isinstance(position, keras.layers.Layer):
        config = keras.saving.serialize_keras_object(position)
        # A scheme's config is a template: whoever holds it builds it.
        config.pop("build_config", None)
        return config
    return copy.deepcopy(position)


def deserialize(config, **defaults):
    """The inverse of `serialize`: `get` on a name or a config."""
    return get(config, **defaults)


def clone(layer, **overrides):
    """A new, unbuilt layer with the config of `layer` (and `overrides`).

    Models use it to give each block its own copy of a template scheme.
    """
    config = layer.get_config()
    config.update(overrides)
    return layer.__class__.from_config(config)


def is_attention_position(layer):
    """Whether `layer` goes inside attention (else into the token embedding)."""
    return isinstance(layer, AttentionPosition)

"""Argument checks shared by all layers: `ValueError`s that name the argument."""

import difflib
import inspect
import numbers


def check_positive_int(name, value, allow_none=False):
    """Returns `value` if it is a positive integer (not a bool), else raises."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer"
            f"{' or None' if allow_none else ''}. Received: {name}={value!r}"
        )
    return int(value)


def check_non_negative_int(name, value):
    """Returns `value` if it is an integer >= 0 (not a bool), else raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative integer. Received: {name}={value!r}"
        )
    return int(value)


def check_bool(name, value):
    """Returns `value` if it is a bool (not 0/1 or a string), else raises."""
    if not isinstance(value, bool):
        raise ValueError(
            f"`{name}` must be a boolean (True or False). Received: {name}={value!r}"
        )
    return value


def clone_initializer(initializer):
    """A fresh copy of a Keras initializer, so sublayers do not share its seed."""
    return initializer.__class__.from_config(initializer.get_config())


def import_keras_hub(purpose):
    """`keras_hub`, or an `ImportError` saying what `purpose` needs it for."""
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs keras-hub, which is not installed. Install it "
            "with `pip install keras-hub` (or `pip install keras-posenc[dev]`)."
        ) from error
    return keras_hub


def check_positive_float(name, value):
    """Returns `value` as a float if it is a finite number > 0, else raises."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value > 0
        or value == float("inf")
    ):
        raise ValueError(
            f"`{name}` must be a positive finite number. Received: {name}={value!r}"
        )
    return float(value)


def check_rate(name, value):
    """Returns `value` if it is a float in [0, 1), else raises."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            f"`{name}` must be a number in [0, 1). Received: {name}={value!r}"
        )
    return float(value)


def check_one_of(name, value, allowed):
    """Returns `value` if it is one of `allowed`, else raises listing them."""
    if isinstance(value, (list, dict)) or value not in allowed:
        raise ValueError(
            f"`{name}` must be one of {list(allowed)}. Received: {name}={value!r}"
        )
    return value


def _dtype_name(value):
    import keras

    return keras.backend.standardize_dtype(value.dtype)


def check_float_tensor(layer_name, name, value):
    """Raises a `TypeError` unless `value` has a floating-point dtype.

    Integer embeddings would be added to an encoding cast to integers, or go
    through attention as if they were features: a silently wrong answer.
    """
    dtype = _dtype_name(value)
    if "float" not in dtype:
        raise TypeError(
            f"{layer_name} expects a floating-point `{name}` (embeddings or "
            f"attention scores, e.g. float32). Received: {name}.dtype={dtype}"
        )


def check_integer_tensor(name, value):
    """Raises a `TypeError` unless `value` has an integer dtype (ids, positions)."""
    dtype = _dtype_name(value)
    if "int" not in dtype:
        raise TypeError(
            f"`{name}` must be an integer tensor (e.g. int32). "
            f"Received: {name}.dtype={dtype}"
        )


def check_token_ids(inputs):
    """Raises a `TypeError` unless every token-id input is an integer tensor.

    A functional model casts its inputs to the `keras.Input` dtype, so float
    ids would silently become other tokens (1.7 -> 1) without this check.

    Args:
        inputs: a tensor (named `token_ids`) or a dict of tensors by input name.
    """
    items = inputs.items() if isinstance(inputs, dict) else [("token_ids", inputs)]
    for name, value in items:
        if _is_float64_distributed_build(value):
            continue
        check_integer_tensor(name, value)


def _is_float64_distributed_build(value):
    """True while Keras' TF trainer builds a model under a `tf.distribute` strategy.

    That build (`_maybe_symbolic_build`) traces the model on the replicas'
    batches averaged with `strategy.reduce("MEAN")`, which turns int32 ids into
    float64 placeholders. Only shapes matter there; the functional model casts
    them back to its int32 input, and the real steps, which run in a replica
    context, are traced with the actual ids and checked.
    """
    import keras

    if keras.config.backend() != "tensorflow" or _dtype_name(value) != "float64":
        return False
    import tensorflow as tf

    return (
        tf.distribute.has_strategy()
        and tf.distribute.in_cross_replica_context()
        and not tf.executing_eagerly()
    )


def constructor_arguments(cls, stop=None):
    """Names the `__init__`s of `cls` and its bases (up to `stop`) take."""
    names = []
    for base in cls.__mro__:
        if base is stop or base is object:
            break
        if "__init__" not in vars(base):
            continue
        for name, parameter in inspect.signature(base.__init__).parameters.items():
            if name == "self" or parameter.kind in (
                inspect.Parameter.VAR_KEYWORD,
                inspect.Parameter.VAR_POSITIONAL,
            ):
                continue
            if name not in names:
                names.append(name)
    return names


# Argument names of keras-hub's layers and backbones and what ours call them.
KERAS_HUB_NAMES = {
    "sequence_length": "max_length",
    "max_sequence_length": "max_length",
    "initializer": "embeddings_initializer",
}


def check_keyword_arguments(cls, kwargs, base_arguments, stop=None):
    """Raises a `TypeError` naming unknown `**kwargs` and the closest valid names.

    Args:
        cls: the class being constructed; its own arguments are read from the
            `__init__` signatures of its bases up to `stop`.
        kwargs: the `**kwargs` left for the Keras base class.
        base_arguments: the names the Keras base class takes.
        stop: the Keras base class (its own signature is `base_arguments`).
    """
    unknown = [name for name in kwargs if name not in base_arguments]
    if not unknown:
        return
    own = constructor_arguments(cls, stop)
    valid = own + [name for name in base_arguments if name not in own]
    hints = []
    for name in unknown:
        renamed = KERAS_HUB_NAMES.get(name)
        if renamed in valid:
            hints.append(f"{name!r} (keras-hub's name; here it is {renamed!r})")
            continue
        close = difflib.get_close_matches(name, valid, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"{cls.__name__} got unexpected keyword argument(s) {', '.join(hints)}. "
        f"It takes: {', '.join(valid)}."
    )


def layer_base_arguments():
    """What `keras.layers.Layer.__init__` takes besides a layer's own arguments."""
    import keras

    parameters = inspect.signature(keras.layers.Layer.__init__).parameters
    names = [name for name in parameters if name not in ("self", "kwargs")]
    # Popped from `**kwargs` by `keras.layers.Layer.__init__` itself.
    return tuple(names) + ("input_dim", "input_shape")


def check_layer_keyword_arguments(layer, kwargs):
    """`check_keyword_arguments` for the `**kwargs` a layer passes to Keras."""
    import keras

    check_keyword_arguments(
        type(layer), kwargs, layer_base_arguments(), stop=keras.layers.Layer
    )

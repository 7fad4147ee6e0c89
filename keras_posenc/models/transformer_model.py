"""What the ready models share: argument checks, position schemes, layers, config.

Every model builds its layers through `TransformerLayers`, so each one gets
the model's dtype policy and its own copy of the position scheme, and
subclasses `TransformerModel`, which checks token ids and owns
`get_config`/`from_config`.
"""

import inspect

import keras
import numpy as np
from keras import ops

from keras_posenc import positions as position_schemes
from keras_posenc.layers.randomized_positions import RandomizedPositions
from keras_posenc.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_keyword_arguments
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import check_rate
from keras_posenc.utils.validation import check_token_ids

# `position=` of every ready model: these names, a config or a layer.
MODEL_POSITIONS = position_schemes.NAMES


class TransformerLayers:
    """Makes a model's layers, all with its dtype policy and position scheme.

    `position` is resolved once (`keras_posenc.positions.get`): an absolute
    scheme goes to every token embedding, an attention scheme to every
    self-attention. A scheme given as a layer or a config is a template:
    each block gets its own copy from its config (so each layer learns its
    own T5 table or Shaw embeddings, where T5 shares one table across
    layers), in the model's dtype policy. A name is resolved by each block,
    so T5 takes causal buckets in decoders.

    A scheme whose config has `scaling` set and `original_max_length=None`
    (rotary's YaRN or dynamic NTK) gets the model's `max_length` there.

    With `randomize_positions=N`, training draws each example's positions
    as a sorted random subset of `range(N)` (Ruoss et al., 2023), for every
    scheme; inference and cached generation use `0, 1, ...`.

    With a `"concat"` scheme the token embedding takes `hidden_dim` minus
    the position width (the layer's `output_dim`, else a quarter of
    `hidden_dim`), so every scheme gives the blocks the same width.
    """

    def __init__(
        self,
        vocabulary_size,
        max_length,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        dropout,
        position,
        normalize_first,
        randomize_positions=None,
        dtype=None,
    ):
        check_positive_int("vocabulary_size", vocabulary_size)
        check_positive_int("max_length", max_length)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("num_layers", num_layers)
        check_positive_int("num_heads", num_heads)
        check_positive_int("intermediate_dim", intermediate_dim)
        check_rate("dropout", dropout)
        check_bool("normalize_first", normalize_first)
        check_positive_int("randomize_positions", randomize_positions, allow_none=True)
        if randomize_positions is not None and randomize_positions < max_length:
            raise ValueError(
                "`randomize_positions` draws the positions of sequences up to "
                f"max_length={max_length} from range(randomize_positions), so "
                "it must be at least `max_length`. Received: "
                f"randomize_positions={randomize_positions}"
            )
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
        # The config of every model starts with these, in this order.
        self.arguments = {
            "vocabulary_size": int(vocabulary_size),
            "max_length": int(max_length),
            "hidden_dim": int(hidden_dim),
            "num_layers": int(num_layers),
            "num_heads": int(num_heads),
            "intermediate_dim": int(intermediate_dim),
            "dropout": float(dropout),
            "position": position,
            "normalize_first": normalize_first,
            "randomize_positions": randomize_positions,
        }
        self.position = position
        self.hidden_dim = hidden_dim
        self.dtype = dtype
        # Learned tables cover every position a randomized draw can give.
        self.max_length = max(max_length, randomize_positions or 0)
        if position is None:
            raise ValueError(
                f"`position` must be one of {list(MODEL_POSITIONS)}, a config or a "
                "layer (`'none'` for no position information). "
                "Received: position=None"
            )
        template = position_schemes.get(
            position, num_heads=num_heads, max_length=max_length
        )
        self.template = template
        self.is_attention = position_schemes.is_attention_position(template)
        if self.is_attention:
            try:
                template.check_attention(num_heads, hidden_dim // num_heads)
            except ValueError as error:
                raise ValueError(
                    f"With position={position!r}, the head size `hidden_dim` / "
                    f"`num_heads` = {hidden_dim // num_heads} does not suit the "
                    f"scheme: {error} Received: hidden_dim={hidden_dim}, "
                    f"num_heads={num_heads}"
                ) from None
        elif template is not None and template.merge is None:
            raise ValueError(
                "An absolute `position` layer must have merge='add' or "
                f"'concat' (it is merged into the token embedding). Received: "
                f"position={position!r}"
            )

    @classmethod
    def from_model_arguments(cls, arguments):
        """Takes the shared arguments out of a model constructor's `locals()`."""
        names = tuple(inspect.signature(cls).parameters)
        return cls(**{name: arguments[name] for name in names})

    def _copy(self, **overrides):
        if self.dtype is not None:
            overrides["dtype"] = self.dtype
        config = self.template.get_config()
        if config.get("scaling") and config.get("original_max_length", 0) is None:
            # A context-extended scheme without its training length takes the
            # model's, as HF transformers takes `max_position_embeddings`.
            overrides["original_max_length"] = self.max_length
        return position_schemes.clone(self.template, **overrides)

    def block_position(self):
        """`position=` for one block: the name, a copy of the template, or None."""
        if not self.is_attention:
            return None
        if isinstance(self.position, str):
            return self.position
        return self._copy()

    def embedding(self, name):
        """A `TokenAndPositionEmbedding` of width `hidden_dim`, id 0 masked."""
        kwargs = {"position": "none", "embedding_dim": self.hidden_dim}
        if self.template is not None and not self.is_attention:
            kwargs["position"] = self.position
            if self.template.merge == "concat":
                position_dim = self.template.output_dim or max(self.hidden_dim // 4, 1)
                if position_dim >= self.hidden_dim:
                    raise ValueError(
                        "A concatenated position encoding must leave room for "
                        f"the tokens in hidden_dim={self.hidden_dim}. Received: "
                        f"position={self.position!r}"
                    )
                kwargs["embedding_dim"] = self.hidden_dim - position_dim
                if isinstance(self.position, str):
                    kwargs["position_dim"] = position_dim
                else:
                    kwargs["position"] = self._copy(output_dim=position_dim)
            elif not isinstance(self.position, str):
                kwargs["position"] = self._copy()
        return TokenAndPositionEmbedding(
            vocabulary_size=self.arguments["vocabulary_size"],
            max_length=self.max_length,
            mask_zero=True,
            dtype=self.dtype,
            name=name,
            **kwargs,
        )

    def blocks(self, block_class, prefix):
        """`num_layers` blocks named `prefix_0, ...`, each with its own scheme."""
        return [
            block_class(
                intermediate_dim=self.arguments["intermediate_dim"],
                num_heads=self.arguments["num_heads"],
                dropout=self.arguments["dropout"],
                normalize_first=self.arguments["normalize_first"],
                position=self.block_position(),
                dtype=self.dtype,
                name=f"{prefix}_{index}",
            )
            for index in range(self.arguments["num_layers"])
        ]

    def randomized_positions(self, name="positions"):
        """A `RandomizedPositions` layer, or None without `randomize_positions`."""
        if self.arguments["randomize_positions"] is None:
            return None
        return RandomizedPositions(
            self.arguments["randomize_positions"], dtype=self.dtype, name=name
        )

    def dropout(self, name, feeds_output=False):
        return keras.layers.Dropout(
            self.arguments["dropout"],
            dtype=self.output_dtype() if feeds_output else self.dtype,
            name=name,
        )

    def final_norm(self, name, feeds_output=True):
        """The layer normalization pre-norm blocks need at the end, or None.

        One that feeds the output layer computes in `output_dtype()`.
        """
        if not self.arguments["normalize_first"]:
            return None
        return keras.layers.LayerNormalization(
            epsilon=1e-5,
            dtype=self.output_dtype() if feeds_output else self.dtype,
            name=name,
        )

    def dense(self, units, name, **kwargs):
        return keras.layers.Dense(units, dtype=self.dtype, name=name, **kwargs)

    def output_dense(self, units, name, **kwargs):
        """The layer that gives the model's logits or probabilities."""
        return keras.layers.Dense(units, dtype=self.output_dtype(), name=name, **kwargs)

    def output_dtype(self):
        """The dtype policy of the output layers: float32 under 16-bit compute.

        As Keras' mixed-precision guide advises, logits and probabilities
        stay in float32 (a softmax or a greedy argmax over bfloat16 logits
        meets rounding and exact ties); other policies apply unchanged.
        """
        policy = keras.dtype_policies.get(
            self.dtype if self.dtype is not None else keras.config.dtype_policy()
        )
        if policy.compute_dtype in ("float16", "bfloat16"):
            return "float32"
        return self.dtype


def run_blocks(layers, prefix, x, *args, **kwargs):
    """Runs the blocks `prefix_0, prefix_1, ...` of `layers` (by name) in order."""
    index = 0
    while f"{prefix}_{index}" in layers:
        x = layers[f"{prefix}_{index}"](x, *args, **kwargs)
        index += 1
    return x


class _TracedCall(keras.Operation):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.error = None

    def call(self, *args):
        try:
            return self.fn(*args)
        except Exception as error:
            self.error = error
            raise


def trace_call(fn, *args):
    """Traces `fn` on symbolic `args` (`KerasTensor`s): shapes out, nothing run.

    The backend traces it as it would a layer's `call` (JAX's `eval_shape`, a
    TensorFlow graph, PyTorch's meta device), so every Python check in `fn`
    runs, and its errors come out as `fn` raised them.
    """
    traced = _TracedCall(fn)
    try:
        return traced.compute_output_spec(*args)
    except Exception:
        if traced.error is not None:
            raise traced.error from None
        raise


def data_spec(x):
    """`KerasTensor`s with the shapes and dtypes of model inputs `x`, or None.

    `x` may be an array, a tensor, nested lists of ints, a dict of those, or
    a `tf.data.Dataset` (its first element: the inputs); None for anything
    else (generators, `PyDataset`s), whose batches are only seen in the step.
    """
    if hasattr(x, "element_spec") and type(x).__module__.startswith("tensorflow"):
        spec = x.element_spec
        if isinstance(spec, tuple):
            spec = spec[0]
        try:
            return keras.tree.map_structure(
                lambda s: keras.KerasTensor(tuple(s.shape), dtype=s.dtype.name), spec
            )
        except (AttributeError, TypeError):
            return None
    if isinstance(x, dict):
        specs = {name: data_spec(value) for name, value in x.items()}
        if any(value is None or isinstance(value, dict) for value in specs.values()):
            return None
        return specs
    if x is None or callable(getattr(x, "__next__", None)):
        return None
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        if not isinstance(x, (list, tuple)):
            return None
        try:
            x = np.asarray(x)
        except ValueError:
            return None
        if x.dtype == object:
            return None
    try:
        dtype = keras.backend.standardize_dtype(x.dtype)
    except ValueError:
        return None
    return keras.KerasTensor(tuple(x.shape), dtype=dtype)


class TransformerModel(keras.Model):
    """Base of the ready models: token-id checks, config and `from_config`.

    Subclasses create their layers with a `TransformerLayers` before
    `super().__init__` (the functional graph needs them) and assign them as
    attributes after it (PyTorch modules cannot be assigned earlier). They
    build their functional graph, call
    `super().__init__(inputs=..., outputs=..., **kwargs)`, then
    `set_arguments(dtype, **layers.arguments, ...)` with their constructor
    arguments, which become attributes and the model's config.
    """

    # What the models pass on to `keras.Model`; anything else is a typo.
    MODEL_KEYWORDS = ("name", "trainable", "dtype")

    @classmethod
    def check_keyword_arguments(cls, kwargs):
        """Raises a `TypeError` naming unknown `**kwargs` and the closest names.

        Keras' functional base accepts and drops unknown keyword arguments,
        so a misspelled `num_head=8` would silently build the default.
        """
        check_keyword_arguments(cls, kwargs, cls.MODEL_KEYWORDS, stop=TransformerModel)

    def set_arguments(self, dtype=None, **arguments):
        # Keras' functional base does not keep the `dtype` it is given.
        self._model_dtype_policy = keras.dtype_policies.get(
            dtype if dtype is not None else keras.config.dtype_policy()
        )
        if "position" in arguments:
            arguments["position"] = position_schemes.serialize(arguments["position"])
        self._arguments = list(arguments)
        for name, value in arguments.items():
            setattr(self, name, value)

    # The keys of `positions=` (a dict) for models with several inputs; a
    # model with one input takes one tensor.
    POSITION_INPUTS = ()

    def named_inputs(self, inputs):
        """Inputs of a model with several, given as a list in order, as a dict.

        Keras' functional base would match a list to the dict inputs in
        sorted-key order (`decoder_token_ids` first), swapping source and
        target without an error.
        """
        if not self.POSITION_INPUTS or not isinstance(inputs, (list, tuple)):
            return inputs
        names = [key.replace("positions", "token_ids") for key in self.POSITION_INPUTS]
        if len(inputs) != len(names):
            raise ValueError(
                f"`inputs` must be a dict with the keys {names} or a list of "
                f"{len(names)} tensors in that order. Received: a list of "
                f"{len(inputs)}"
            )
        return dict(zip(names, inputs))

    def call(self, inputs, training=None, mask=None, positions=None):
        inputs = self.named_inputs(inputs)
        check_token_ids(inputs)
        if positions is None:
            return super().call(inputs, training=training, mask=mask)
        positions = self.check_positions(inputs, positions)
        return self.run_layers(
            self.layers_by_name(), inputs, positions, training=training
        )

    def layers_by_name(self):
        """What `run_layers` reads: the model's layers by name."""
        return {layer.name: layer for layer in self.layers}

    def compute_output_spec(self, inputs, training=None, mask=None, positions=None):
        inputs = self.named_inputs(inputs)
        if positions is None:
            return super().compute_output_spec(inputs, training=training, mask=mask)
        # The functional graph has no `positions` input: trace `call` itself.
        return keras.layers.Layer.compute_output_spec(
            self, inputs, training=training, positions=positions
        )

    @staticmethod
    def run_layers(layers, inputs, positions=None, training=None):
        """The model's computation, on its layers by name.

        It builds the functional graph (on `keras.Input`s, before the model
        exists) and runs `call(inputs, positions=...)`, so both are one code.
        """
        raise NotImplementedError

    def check_positions(self, inputs, positions):
        """Int positions shaped as the token ids they number; a dict if several."""
        if not self.POSITION_INPUTS:
            pairs = [("positions", positions, inputs)]
        else:
            if (
                not isinstance(positions, dict)
                or not positions
                or set(positions) - set(self.POSITION_INPUTS)
            ):
                raise ValueError(
                    "`positions` must be a dict with some of the keys "
                    f"{list(self.POSITION_INPUTS)}. Received: positions of type "
                    f"{type(positions).__name__}"
                    + (
                        f" with keys {sorted(positions)}"
                        if isinstance(positions, dict)
                        else ""
                    )
                )
            pairs = [
                (key, value, inputs[key.replace("positions", "token_ids")])
                for key, value in positions.items()
            ]
        checked = {}
        for name, value, token_ids in pairs:
            value = ops.convert_to_tensor(value)
            if not keras.backend.standardize_dtype(value.dtype).startswith(
                ("int", "uint")
            ):
                raise TypeError(
                    f"`{name}` must hold integer positions. Received: "
                    f"dtype={keras.backend.standardize_dtype(value.dtype)}"
                )
            if len(value.shape) == 1:
                value = ops.broadcast_to(value[None, :], ops.shape(token_ids))
            shape, expected = tuple(value.shape), tuple(token_ids.shape)
            if len(shape) != 2 or any(
                a is not None and b is not None and a != b
                for a, b in zip(shape, expected)
            ):
                raise ValueError(
                    f"`{name}` must have the shape of the token ids it numbers "
                    f"{expected} (or be 1-D, shared by the batch). Received: "
                    f"{name}.shape={shape}"
                )
            checked[name] = ops.cast(value, "int32")
        return checked if self.POSITION_INPUTS else checked["positions"]

    def check_data(self, x):
        """Runs the input checks of `call` on `x` before a trainer step does.

        Keras' JAX trainer takes the variables out of the model for its
        compiled step, so an input error raised inside the step would leave
        the model without weights (and the other trainers half-built). The
        `fit`/`evaluate`/`predict` family therefore checks `x` first, once per
        shape and dtype: the dtypes and batch sizes of every input, then one
        symbolic call on the shape of the first row (shape checks such as a
        learned table's length). Arrays, tensors, nested lists and dicts of
        them are checked so, a `tf.data.Dataset` on its `element_spec`;
        batches of other iterables are only seen inside the step.
        """
        x = self.named_inputs(x)
        spec = data_spec(x)
        if spec is None:
            return
        key = repr(keras.tree.map_structure(lambda t: (t.shape, t.dtype), spec))
        checked = self.__dict__.setdefault("_checked_data", set())
        if key in checked:
            return
        check_token_ids(spec)
        sizes = {t.shape[0] for t in keras.tree.flatten(spec) if t.shape}
        sizes.discard(None)
        if len(sizes) > 1:
            raise ValueError(
                "Every input must have the same batch size. Received: "
                + ", ".join(f"{name}.shape={t.shape}" for name, t in spec.items())
            )
        if not isinstance(x, (dict, list, tuple)) and not hasattr(x, "shape"):
            checked.add(key)  # A dataset: its spec is all there is.
            return
        first_row = keras.tree.map_structure(
            lambda value: np.asarray(keras.ops.convert_to_numpy(value))[:1], x
        )
        if any(value.size == 0 for value in keras.tree.flatten(first_row)):
            return
        # Traced, not run: the checks look at shapes and dtypes only, and an
        # eager call compiled every op of the model once per shape on JAX.
        trace_call(
            lambda row: self(row, training=False),
            keras.tree.map_structure(
                lambda value: keras.KerasTensor(value.shape, value.dtype), first_row
            ),
        )
        checked.add(key)

    def fit(self, x=None, y=None, *args, **kwargs):
        self.check_data(x)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self.check_data(x)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self.check_data(x)
        return super().predict(x, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        self.check_data(x)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        self.check_data(x)
        return super().test_on_batch(x, y, *args, **kwargs)

    def predict_on_batch(self, x):
        self.check_data(x)
        return super().predict_on_batch(x)

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self._model_dtype_policy),
        }
        config.update({name: getattr(self, name) for name in self._arguments})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

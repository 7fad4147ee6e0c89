"""The protocol between an attention layer and the position scheme inside it."""

import keras

from keras_posenc.utils.validation import check_layer_keyword_arguments


@keras.saving.register_keras_serializable(package="keras_posenc")
class AttentionPosition(keras.layers.Layer):
    """Base class of the position schemes that act inside attention.

    `PositionalMultiHeadAttention` (and every block and model built on it)
    talks to its position scheme only through the hooks below, never through
    its class, so a subclass of this layer works wherever the built-in
    schemes do. Each hook has a neutral default; override the ones the
    scheme needs:

    - `rotate(inputs, positions, is_key)`: transform the projected queries
      and keys at their positions before the dot product (rotary, xPos).
      Defaults to returning `inputs` unchanged.
    - `compute_bias(query_positions, key_positions)`: an additive bias of
      the attention logits from positions alone, of shape `(batch or 1,
      heads or 1, T, S)` (ALiBi, T5, or e.g. a sliding window). Defaults to
      None.
    - `compute_logits(query, query_positions, key_positions, key=None)`: a
      content-dependent logit term of shape `(batch, heads, T, S)`, added
      before the `1 / sqrt(key_dim)` scaling (Shaw's `q_i . a_ij`). Defaults
      to None.
    - `compute_values(attention_weights, query_positions, key_positions)`:
      a term `(batch, T, heads, value_dim)` added to the attention output,
      from the `(batch, heads, T, S)` attention weights (Shaw's
      `sum_j w_ij a_ij`). Defaults to None.
    - `needs_attention_weights`: whether `compute_values` must see the
      weights, which keeps the attention on its explicit (non-fused) path.
      Defaults to False; without it the logit term and the bias go to
      `keras.ops.dot_product_attention` as one bias.
    - `compute_attention(query, key, value, query_positions, key_positions,
      scale, mask=None)`: the whole attention `(batch, T, heads, value_dim)`
      by the scheme's own faster route, or None to use the hooks above. Only
      asked when the output alone is needed (no scores, no dropout, no extra
      bias); it must equal what the hooks compute. Defaults to None.
    - `check_attention(num_heads, key_dim)`: raise a `ValueError` if the
      scheme cannot serve an attention layer of these sizes (called when the
      attention layer is created). Defaults to accepting any.
    - `num_position_axes`: how many position axes the scheme reads (more
      than 1 for multi-axis rotary: the attention layer then also takes
      `positions` of shape `(batch, T, num_position_axes)`). Defaults to 1.
    - `has_token_state`, `build_for_inputs(input_shape)`,
      `compute_token_state(inputs)` and `compute_state_bias(key_state,
      query_slots)`: for schemes that read the self-attention layer's own
      inputs (the forgetting bias). `compute_token_state` maps the
      `(batch, S, dim)` inputs to a `(batch, S, heads)` state per token;
      under a key/value cache the attention layer stores it beside the keys
      and values (a third cache entry, see `PositionalMultiHeadAttention`),
      and `compute_state_bias` turns the state of every key slot and the
      slots of the queries into a `(batch, heads, T, S)` bias. Default:
      no state.

    Positions are int32 tensors of shape `(T,)` / `(S,)`, or `(batch, T)` /
    `(batch, S)` for per-example positions (left padding, packing); under a
    key/value cache the query positions start at the cache index. The
    attention layer builds the scheme with the shape of its projected
    queries, `(batch, T, num_heads, key_dim)` (through
    `build_for_attention`), so `build` can read the head count and size from
    `input_shape[2:]`. Register a subclass with
    `keras.saving.register_keras_serializable` so that models holding it
    save and load with `safe_mode=True`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras import ops
    >>> import keras_posenc
    >>> class Window(keras_posenc.layers.AttentionPosition):
    ...     def compute_bias(self, query_positions, key_positions):
    ...         distance = ops.abs(query_positions[:, None] - key_positions[None])
    ...         return ops.where(distance <= 2, 0.0, -1e4)[None, None]
    >>> attention = keras_posenc.layers.PositionalMultiHeadAttention(
    ...     num_heads=2, key_dim=4, position=Window())
    >>> x = np.random.rand(1, 6, 8).astype("float32")
    >>> tuple(attention(x, x).shape)
    (1, 6, 8)
    """

    def __init__(self, **kwargs):
        check_layer_keyword_arguments(self, kwargs)
        super().__init__(**kwargs)

    @property
    def needs_attention_weights(self):
        return False

    def check_attention(self, num_heads, key_dim):
        """Raises a `ValueError` if the scheme cannot serve these sizes."""

    def build_for_attention(self, query_shape):
        """Builds the scheme for projected queries `(batch, T, heads, key_dim)`.

        Layers whose standalone `call` takes another shape (the bias layers
        take attention scores) override this to build from it.
        """
        if not self.built:
            self.build(query_shape)

    @property
    def num_position_axes(self):
        return 1

    @property
    def has_token_state(self):
        return False

    def build_for_inputs(self, input_shape):
        """Builds weights that read the attention inputs `(batch, S, dim)`."""

    def compute_token_state(self, inputs):
        """`(batch, S, heads)` state of each input token, or None."""
        return None

    def compute_state_bias(self, key_state, query_slots):
        """`(batch, heads, T, S)` bias from the key slots' state, or None.

        Args:
            key_state: `(batch, S, heads)` token state of every key slot.
            query_slots: int `(T,)`, the key slots the queries occupy.
        """
        return None

    def rotate(self, inputs, positions, is_key=False):
        """`inputs` `(batch, L, heads, key_dim)` transformed at `positions`."""
        return inputs

    def _call_built(self, inputs, **kwargs):
        """`self(inputs, **kwargs)`, through `call` alone once built.

        For the weightless transforms of `rotate` (rotary, xPos), which the
        attention layer calls twice per layer and decoding step: in eager
        PyTorch, `Layer.__call__` costs about 0.2 ms a call (argument
        conversion, masks, scopes), more than the rotation itself.
        """
        if not self.built or self.weights:
            return self(inputs, **kwargs)
        return self.call(inputs, **kwargs)

    def compute_bias(self, query_positions, key_positions):
        """Additive `(batch or 1, heads or 1, T, S)` logit bias, or None."""
        return None

    def compute_logits(self, query, query_positions, key_positions, key=None):
        """Content-dependent `(batch, heads, T, S)` logit term, or None."""
        return None

    def compute_values(self, attention_weights, query_positions, key_positions):
        """`(batch, T, heads, value_dim)` term added to the output, or None."""
        return None

    def compute_attention(
        self, query, key, value, query_positions, key_positions, scale, mask=None
    ):
        """`(batch, T, heads, value_dim)` attention by a faster route, or None.

        Args:
            query: `(batch, T, heads, key_dim)`, already rotated.
            key: `(batch, S, heads, key_dim)`, already rotated.
            value: `(batch, S, heads, value_dim)`.
            query_positions: int `(T,)` or `(batch, T)`.
            key_positions: int `(S,)` or `(batch, S)`.
            scale: float. Multiplies the query-key logits.
            mask: optional bool `(batch or 1, T, S)`, True where allowed.
        """
        return None

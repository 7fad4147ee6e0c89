"""Bad input, tabulated: every public layer, function and model, every kind of misuse.

Each row of `CASES` misuses one target in one way and names the error it must
raise: a `ValueError` or `TypeError` whose message matches a pattern that holds
the argument's name and the value it expects. `REQUIRED` lists, per target,
the kinds of misuse that apply to it (a layer without a table has no "length"
row); `test_table_is_complete` fails if a public name or a required kind has
no row, so the table grows with the library.

Stages: "init" rows raise in the constructor, "symbolic" rows on a
`keras.Input` (while a functional model is being built, before any data), and
"call" rows on concrete arrays. Checks that need a value (a `start_index`
tensor, a position past a learned table given as a tensor) or an axis unknown
while tracing cannot raise inside a compiled graph; the docstrings say so.
"""

import dataclasses
import re

import keras
import numpy as np
import pytest

from keras_posenc import layers
from keras_posenc import models
from keras_posenc import positions
from tests.hardening.counts import record

KINDS = (
    "rank",  # wrong input rank
    "dtype",  # float token ids, integer embeddings, float positions
    "width",  # a width or head count the scheme cannot use
    "length",  # a sequence longer than a learned table
    "start_index",  # a negative or non-integer start (or cache) index
    "positions",  # `positions` / `key_positions` of the wrong shape or dtype
    "scheme",  # unknown scheme or enum names
    "mask",  # masks that do not broadcast, mismatched batch sizes
    "argument",  # other invalid constructor arguments
)

MODEL_NAMES = ("TransformerClassifier", "TransformerLM", "Seq2SeqTransformer")
# The lists of scheme names the errors print.
ATTENTION_LIST = re.escape(str([*positions.ATTENTION_NAMES, "none"]))
MODEL_LIST = re.escape(str(list(positions.NAMES)))

# Which kinds apply to which target; the others do not exist for it (no
# learned table, no mask argument, no scheme name, ...).
REQUIRED = {
    "AttentionPosition": {"scheme", "width"},
    "FIREBias": {"width", "argument"},
    "ForgettingBias": {"rank", "dtype", "width", "argument"},
    "ContextualPositionBias": {"rank", "positions", "argument"},
    "MultiAxisRotaryEmbedding": {"width", "positions", "scheme", "argument"},
    "KerpleBias": {"rank", "width", "scheme"},
    "RandomizedPositions": {"length", "argument"},
    "ALiBiBias": {"rank", "dtype", "width", "start_index", "positions", "argument"},
    "FeedForward": {"rank", "dtype", "argument"},
    "LearnedPositionEmbedding": {
        "rank",
        "dtype",
        "width",
        "length",
        "start_index",
        "positions",
        "scheme",
    },
    "PositionalMultiHeadAttention": {
        "rank",
        "dtype",
        "width",
        "start_index",
        "positions",
        "scheme",
        "mask",
    },
    "RelativePositionEmbedding": {
        "rank",
        "dtype",
        "width",
        "start_index",
        "positions",
        "argument",
    },
    "RotaryEmbedding": {
        "rank",
        "dtype",
        "width",
        "start_index",
        "positions",
        "scheme",
    },
    "SinusoidalPositionEncoding": {
        "rank",
        "dtype",
        "width",
        "start_index",
        "positions",
        "scheme",
    },
    "T5RelativePositionBias": {
        "rank",
        "dtype",
        "width",
        "start_index",
        "positions",
        "argument",
    },
    "TokenAndPositionEmbedding": {
        "rank",
        "dtype",
        "width",
        "length",
        "start_index",
        "positions",
        "scheme",
    },
    "TransformerDecoder": {
        "rank",
        "dtype",
        "width",
        "start_index",
        "positions",
        "scheme",
        "mask",
    },
    "TransformerEncoder": {
        "rank",
        "dtype",
        "width",
        "positions",
        "scheme",
        "mask",
    },
    "XPos": {"rank", "dtype", "width", "start_index", "positions"},
    "alibi_slopes": {"argument"},
    "interpolate_position_table": {"rank", "length"},
    "t5_relative_position_bucket": {"dtype", "argument"},
    "TransformerClassifier": {"rank", "dtype", "width", "length", "scheme"},
    "TransformerLM": {"rank", "dtype", "width", "length", "scheme", "start_index"},
    "Seq2SeqTransformer": {"rank", "dtype", "width", "length", "scheme", "mask"},
}


@dataclasses.dataclass
class Case:
    target: str
    kind: str
    stage: str
    error: type
    match: str
    trigger: object
    note: str

    @property
    def id(self):
        return f"{self.target}-{self.kind}-{self.note}"


CASES = []


def case(target, kind, stage, error, match, note):
    """Registers the decorated function as one row of the table."""
    assert kind in KINDS and stage in ("init", "symbolic", "call")

    def register(trigger):
        CASES.append(Case(target, kind, stage, error, match, trigger, note))
        return trigger

    return register


# === Shared inputs ===

BATCH, LENGTH, WIDTH, HEADS, HEAD_DIM = 2, 5, 8, 2, 4


def embeddings(dtype="float32", shape=(BATCH, LENGTH, WIDTH)):
    return np.zeros(shape, dtype)


def head_tensors(dtype="float32", shape=(BATCH, LENGTH, HEADS, HEAD_DIM)):
    return np.ones(shape, dtype)


def scores(dtype="float32", heads=HEADS, query=LENGTH, key=LENGTH):
    return np.zeros((BATCH, heads, query, key), dtype)


def token_ids(shape=(BATCH, LENGTH), dtype="int32"):
    return np.ones(shape, dtype)


INT = r"must be an integer tensor"
FLOAT_INPUTS = r"expects a floating-point `inputs`.*inputs\.dtype=int32"
NEGATIVE_START = r"`start_index` must be a non-negative integer.*start_index=-1"
POSITIONS_LENGTH = r"`positions` must equal the sequence length 5.*\(4,\)"
POSITIONS_BATCH = r"first axis of `positions` must be 1 or the batch size 2"


# === Absolute position layers ===

ABSOLUTE = {
    "SinusoidalPositionEncoding": lambda **kw: layers.SinusoidalPositionEncoding(**kw),
    "LearnedPositionEmbedding": lambda **kw: layers.LearnedPositionEmbedding(
        max_length=8, **kw
    ),
}

for _name, _make in ABSOLUTE.items():

    @case(
        _name,
        "rank",
        "call",
        ValueError,
        r"\(batch_size, sequence_length, "
        r"feature_dim\).*inputs\.shape=\(2, 5\)",
        "2d-inputs",
    )
    def _(make=_make):
        make()(np.zeros((BATCH, LENGTH), "float32"))

    @case(
        _name,
        "rank",
        "symbolic",
        ValueError,
        r"known feature dimension.*"
        r"inputs\.shape=\(None, None, None\)",
        "unknown-width",
    )
    def _(make=_make):
        make()(keras.Input(shape=(None, None)))

    @case(_name, "dtype", "call", TypeError, FLOAT_INPUTS, "int-embeddings")
    def _(make=_make):
        make()(embeddings("int32"))

    @case(_name, "dtype", "symbolic", TypeError, FLOAT_INPUTS, "int-input")
    def _(make=_make):
        make()(keras.Input(shape=(None, WIDTH), dtype="int32"))

    @case(
        _name,
        "width",
        "symbolic",
        ValueError,
        r"`output_dim` must be None or "
        r"equal to the width of `inputs` \(8\).*output_dim=4",
        "add-width",
    )
    def _(make=_make):
        make(output_dim=4)(keras.Input(shape=(None, WIDTH)))

    @case(_name, "start_index", "call", ValueError, NEGATIVE_START, "negative")
    def _(make=_make):
        make()(embeddings(), start_index=-1)

    @case(
        _name,
        "start_index",
        "call",
        ValueError,
        r"`start_index` must be a non-negative integer.*start_index=1\.5",
        "python-float",
    )
    def _(make=_make):
        make()(embeddings(), start_index=1.5)

    @case(
        _name, "start_index", "call", TypeError, r"`start_index` " + INT, "float-tensor"
    )
    def _(make=_make):
        make()(embeddings(), start_index=np.float32(2.0))

    @case(
        _name,
        "start_index",
        "call",
        ValueError,
        r"`start_index` must be a scalar.*\(2,\)",
        "vector",
    )
    def _(make=_make):
        make()(embeddings(), start_index=np.array([1, 2]))

    @case(_name, "positions", "call", ValueError, POSITIONS_LENGTH, "length")
    def _(make=_make):
        make()(embeddings(), positions=np.arange(4))

    @case(_name, "positions", "call", ValueError, POSITIONS_BATCH, "batch")
    def _(make=_make):
        make()(embeddings(), positions=np.zeros((3, LENGTH), "int32"))

    @case(
        _name,
        "positions",
        "call",
        ValueError,
        r"\(sequence_length,\) or "
        r"\(batch_size, sequence_length\).*\(2, 5, 1\)",
        "rank",
    )
    def _(make=_make):
        make()(embeddings(), positions=np.zeros((BATCH, LENGTH, 1), "int32"))

    @case(
        _name,
        "scheme",
        "init",
        ValueError,
        r"`merge` must be one of \['add', 'concat', None\].*merge='sum'",
        "merge",
    )
    def _(make=_make):
        make(merge="sum")


@case(
    "LearnedPositionEmbedding",
    "length",
    "call",
    ValueError,
    r"start_index \(0\) \+ sequence length \(5\) = 5 > max_length \(4\)",
    "long",
)
def _():
    layers.LearnedPositionEmbedding(max_length=4)(embeddings())


@case(
    "LearnedPositionEmbedding",
    "length",
    "call",
    ValueError,
    r"start_index \(4\) \+ sequence length \(5\) = 9 > max_length \(8\)",
    "offset",
)
def _():
    layers.LearnedPositionEmbedding(max_length=8)(embeddings(), start_index=4)


# === TokenAndPositionEmbedding ===


def token_embedding(**kwargs):
    config = dict(vocabulary_size=10, max_length=8, embedding_dim=4)
    config.update(kwargs)
    return layers.TokenAndPositionEmbedding(**config)


@case(
    "TokenAndPositionEmbedding",
    "rank",
    "call",
    ValueError,
    r"token ids of shape \(batch_size, sequence_length\).*\(2, 5, 1\)",
    "3d-ids",
)
def _():
    token_embedding()(token_ids((BATCH, LENGTH, 1)))


@case(
    "TokenAndPositionEmbedding",
    "rank",
    "symbolic",
    ValueError,
    r"\(batch_size, sequence_length\).*inputs\.shape=\(None,\)",
    "1d-ids",
)
def _():
    token_embedding()(keras.Input(batch_shape=(None,), dtype="int32"))


@case(
    "TokenAndPositionEmbedding",
    "dtype",
    "call",
    TypeError,
    r"expects integer token ids.*inputs\.dtype=float32",
    "float-ids",
)
def _():
    token_embedding()(token_ids(dtype="float32"))


@case(
    "TokenAndPositionEmbedding",
    "dtype",
    "symbolic",
    TypeError,
    r"expects integer token ids.*inputs\.dtype=float32",
    "float-input",
)
def _():
    token_embedding()(keras.Input(shape=(None,), dtype="float32"))


@case(
    "TokenAndPositionEmbedding",
    "width",
    "init",
    ValueError,
    r"`position_dim` must be None or equal to `embedding_dim` \(4\).*"
    r"position_dim=3",
    "add-width",
)
def _():
    token_embedding(position_dim=3)


@case(
    "TokenAndPositionEmbedding",
    "length",
    "call",
    ValueError,
    r"= 5 > max_length \(4\)",
    "learned",
)
def _():
    token_embedding(position="learned", max_length=4)(token_ids())


@case(
    "TokenAndPositionEmbedding",
    "length",
    "call",
    ValueError,
    r"= 6 > max_length \(4\)",
    "learned-concat",
)
def _():
    layer = token_embedding(
        position="learned", merge="concat", position_dim=2, max_length=4
    )
    layer(token_ids((BATCH, 6)))


@case(
    "TokenAndPositionEmbedding",
    "start_index",
    "call",
    ValueError,
    r"`start_index` must be a non-negative integer.*start_index=-2",
    "negative",
)
def _():
    token_embedding(position="learned")(token_ids(), start_index=-2)


@case(
    "TokenAndPositionEmbedding",
    "positions",
    "call",
    ValueError,
    POSITIONS_LENGTH,
    "length",
)
def _():
    token_embedding()(token_ids(), positions=np.arange(4))


@case(
    "TokenAndPositionEmbedding",
    "scheme",
    "init",
    ValueError,
    r"`position` must be one of \['sinusoidal', 'sinusoidal_concat', 'learned', "
    r"'learned_concat', 'none'\].*position='rope'",
    "position",
)
def _():
    token_embedding(position="rope")


@case(
    "TokenAndPositionEmbedding",
    "scheme",
    "init",
    ValueError,
    r"`merge` must be one of \['add', 'concat', None\].*merge='sum'",
    "merge",
)
def _():
    token_embedding(merge="sum")


# === The attention protocol ===


@case(
    "AttentionPosition",
    "scheme",
    "init",
    ValueError,
    r"`position` must be one of \['sinusoidal'.*attention schemes belong.*"
    r"position=<AttentionPosition",
    "scheme-in-embedding",
)
def _():
    token_embedding(position=layers.AttentionPosition())


@case(
    "AttentionPosition",
    "width",
    "init",
    ValueError,
    r"`key_dim` does not suit.*num_heads=2.*attention has num_heads=4",
    "heads-of-scheme",
)
def _():
    layers.PositionalMultiHeadAttention(
        num_heads=4, key_dim=4, position=layers.T5RelativePositionBias(num_heads=2)
    )


# === KERPLE, FIRE, randomized positions ===


@case(
    "KerpleBias",
    "rank",
    "call",
    ValueError,
    r"KerpleBias expects attention scores of shape .*inputs\.shape=\(2, 5, 5\)",
    "scores-rank",
)
def _():
    layers.KerpleBias(num_heads=HEADS)(np.zeros((2, 5, 5), "float32"))


@case(
    "KerpleBias",
    "width",
    "call",
    ValueError,
    r"num_heads=2.*inputs\.shape=\(2, 3, 5, 5\)",
    "scores-heads",
)
def _():
    layers.KerpleBias(num_heads=HEADS)(np.zeros((2, 3, 5, 5), "float32"))


@case(
    "KerpleBias",
    "scheme",
    "init",
    ValueError,
    r"`kind` must be one of \['log', 'power'\].*kind='exp'",
    "kind",
)
def _():
    layers.KerpleBias(num_heads=HEADS, kind="exp")


@case(
    "FIREBias",
    "width",
    "init",
    ValueError,
    r"FIREBias was created with num_heads=3.*attention has num_heads=2",
    "heads-of-attention",
)
def _():
    attention(position=layers.FIREBias(num_heads=3))


@case(
    "FIREBias",
    "argument",
    "init",
    ValueError,
    r"`mlp_width` must be a positive integer.*mlp_width=0",
    "mlp-width",
)
def _():
    layers.FIREBias(num_heads=HEADS, mlp_width=0)


# === Forgetting bias, CoPE, multi-axis rotary ===


@case(
    "ForgettingBias",
    "width",
    "init",
    ValueError,
    r"ForgettingBias\(num_heads=3\) cannot serve an attention layer with num_heads=2",
    "heads-of-attention",
)
def _():
    attention(position=layers.ForgettingBias(num_heads=3))


@case(
    "ForgettingBias",
    "argument",
    "init",
    ValueError,
    r"`num_heads` must be a positive integer.*num_heads=0",
    "num-heads",
)
def _():
    layers.ForgettingBias(num_heads=0)


@case(
    "ForgettingBias",
    "argument",
    "call",
    ValueError,
    r"ForgettingBias reads the layer's own inputs and needs self-attention"
    r".*key\.shape=\(2, 4, 8\)",
    "cross-attention",
)
def _():
    attention(position="forgetting")(
        np.zeros((2, 5, 8), "float32"), np.zeros((2, 4, 8), "float32")
    )


@case(
    "ForgettingBias",
    "rank",
    "call",
    ValueError,
    r"`inputs` must have shape \(batch_size, length, dim\).*inputs\.shape=\(2, 5\)",
    "inputs-rank",
)
def _():
    layers.ForgettingBias(num_heads=HEADS)(np.zeros((2, 5), "float32"))


@case(
    "ForgettingBias",
    "dtype",
    "call",
    TypeError,
    r"ForgettingBias expects a floating-point `inputs`.*inputs\.dtype=int32",
    "int-inputs",
)
def _():
    layers.ForgettingBias(num_heads=HEADS)(np.zeros((2, 5, 3), "int32"))


@case(
    "ContextualPositionBias",
    "argument",
    "init",
    ValueError,
    r"`num_positions` must be a positive integer.*num_positions=0",
    "num-positions",
)
def _():
    layers.ContextualPositionBias(num_positions=0)


@case(
    "ContextualPositionBias",
    "rank",
    "call",
    ValueError,
    r"`query` must have shape \(batch_size, T, num_heads, key_dim\).*"
    r"query\.shape=\(2, 5, 8\)",
    "query-rank",
)
def _():
    x = np.zeros((2, 5, 8), "float32")
    layers.ContextualPositionBias()(x, x)


@case(
    "ContextualPositionBias",
    "positions",
    "call",
    ValueError,
    r"The last axis of `positions` must equal the sequence length 5.*"
    r"positions\.shape=\(4,\)",
    "positions-length",
)
def _():
    x = np.zeros((2, 5, 2, 4), "float32")
    layers.ContextualPositionBias()(x, x, positions=np.arange(4))


@case(
    "MultiAxisRotaryEmbedding",
    "argument",
    "init",
    ValueError,
    r"`sections` must be None or a non-empty list of positive integers.*"
    r"sections=\[0, 2\]",
    "sections",
)
def _():
    layers.MultiAxisRotaryEmbedding(sections=[0, 2])


@case(
    "MultiAxisRotaryEmbedding",
    "scheme",
    "init",
    ValueError,
    r"`frequencies` must be one of \['shared', 'per_axis'\].*frequencies='axial'",
    "frequencies",
)
def _():
    layers.MultiAxisRotaryEmbedding(frequencies="axial")


@case(
    "MultiAxisRotaryEmbedding",
    "width",
    "call",
    ValueError,
    r"2 \* sum\(`sections`\) \(the rotary width\) must be at most the feature "
    r"dimension.*sections=\[4, 4\] \(width 16\), feature_dim=8",
    "sections-too-wide",
)
def _():
    layers.MultiAxisRotaryEmbedding(sections=[4, 4])(np.zeros((2, 5, 8), "float32"))


@case(
    "MultiAxisRotaryEmbedding",
    "positions",
    "call",
    ValueError,
    r"The last axis of 3-D `positions` must hold the 3 position axes.*"
    r"positions\.shape=\(2, 5, 2\)",
    "attention-axes",
)
def _():
    x = np.zeros((2, 5, 8), "float32")
    layers.PositionalMultiHeadAttention(num_heads=2, key_dim=8, position="mrope")(
        x, x, positions=np.zeros((2, 5, 2), "int32")
    )


@case(
    "MultiAxisRotaryEmbedding",
    "positions",
    "call",
    ValueError,
    r"The last axis of `positions` must hold one position per axis.*num_axes=2",
    "layer-axes",
)
def _():
    layers.MultiAxisRotaryEmbedding(sections=[2, 2])(
        np.zeros((2, 5, 8), "float32"), positions=np.zeros((2, 5, 3), "int32")
    )


@case(
    "RandomizedPositions",
    "length",
    "call",
    ValueError,
    r"draws 5 positions from range\(max_position=4\).*inputs\.shape=\(2, 5\)",
    "longer-than-range",
)
def _():
    layers.RandomizedPositions(max_position=4)(np.ones((2, 5), "int32"))


@case(
    "RandomizedPositions",
    "argument",
    "init",
    ValueError,
    r"`max_position` must be a positive integer.*max_position=0",
    "max-position",
)
def _():
    layers.RandomizedPositions(max_position=0)


# === Rotary and xPos ===


@case(
    "RotaryEmbedding",
    "rank",
    "call",
    ValueError,
    r"\(batch_size, sequence_length, \.\.\., feature_dim\).*\(5, 8\)",
    "2d",
)
def _():
    layers.RotaryEmbedding()(np.zeros((LENGTH, WIDTH), "float32"))


@case("RotaryEmbedding", "dtype", "call", TypeError, FLOAT_INPUTS, "int-inputs")
def _():
    layers.RotaryEmbedding()(head_tensors("int32"))


@case(
    "RotaryEmbedding",
    "width",
    "init",
    ValueError,
    r"`rotary_dim` must be even.*rotary_dim=5",
    "odd-rotary-dim",
)
def _():
    layers.RotaryEmbedding(rotary_dim=5)


@case(
    "RotaryEmbedding",
    "width",
    "symbolic",
    ValueError,
    r"`rotary_dim` must be at most the feature dimension.*rotary_dim=8, "
    r"feature_dim=4",
    "rotary-dim-too-wide",
)
def _():
    layers.RotaryEmbedding(rotary_dim=8)(keras.Input(shape=(None, HEADS, HEAD_DIM)))


@case(
    "RotaryEmbedding",
    "width",
    "symbolic",
    ValueError,
    r"feature dimension.*must be even.*feature_dim=7",
    "odd-feature-dim",
)
def _():
    layers.RotaryEmbedding()(keras.Input(shape=(None, HEADS, 7)))


@case("RotaryEmbedding", "start_index", "call", ValueError, NEGATIVE_START, "neg")
def _():
    layers.RotaryEmbedding()(head_tensors(), start_index=-1)


@case("RotaryEmbedding", "positions", "call", ValueError, POSITIONS_LENGTH, "len")
def _():
    layers.RotaryEmbedding()(head_tensors(), positions=np.arange(4))


@case(
    "LearnedPositionEmbedding",
    "positions",
    "call",
    TypeError,
    r"`positions` " + INT,
    "float",
)
def _():
    # A table lookup needs integers (sinusoidal, rotary and xPos accept
    # fractional positions).
    layers.LearnedPositionEmbedding(max_length=8)(
        embeddings(), positions=np.arange(LENGTH) + 0.5
    )


@case(
    "LearnedPositionEmbedding",
    "positions",
    "call",
    ValueError,
    r"`positions` must lie in \[0, max_length\) = \[0, 8\).*from 4 to 8",
    "outside-table",
)
def _():
    # Known values (an eager call) are checked; in a graph they give NaN.
    layers.LearnedPositionEmbedding(max_length=8)(
        embeddings(), positions=np.arange(LENGTH) + 4
    )


@case(
    "TokenAndPositionEmbedding",
    "positions",
    "call",
    TypeError,
    r"`positions` " + INT,
    "float-learned",
)
def _():
    token_embedding(position="learned")(token_ids(), positions=np.arange(LENGTH) + 0.5)


@case("RotaryEmbedding", "positions", "call", ValueError, POSITIONS_BATCH, "batch")
def _():
    layers.RotaryEmbedding()(head_tensors(), positions=np.zeros((3, LENGTH), "int32"))


@case(
    "RotaryEmbedding",
    "scheme",
    "init",
    ValueError,
    r"`layout` must be one of \['half', 'interleaved'\].*layout='full'",
    "layout",
)
def _():
    layers.RotaryEmbedding(layout="full")


@case(
    "RotaryEmbedding",
    "scheme",
    "init",
    ValueError,
    r"`scaling` must be one of \[None, 'linear', 'dynamic_ntk', 'ntk', 'yarn', "
    r"'llama3', 'longrope'\].*scaling='ntk_aware'",
    "scaling",
)
def _():
    layers.RotaryEmbedding(scaling="ntk_aware", scaling_factor=2.0)


@case(
    "XPos", "rank", "call", ValueError, r"XPos expects inputs of shape.*\(5, 8\)", "2d"
)
def _():
    layers.XPos()(np.zeros((LENGTH, WIDTH), "float32"))


@case("XPos", "dtype", "call", TypeError, FLOAT_INPUTS, "int-inputs")
def _():
    layers.XPos()(head_tensors("int32"))


@case(
    "XPos",
    "width",
    "symbolic",
    ValueError,
    r"known, even feature_dim.*\(None, None, 2, 7\)",
    "odd-feature-dim",
)
def _():
    layers.XPos()(keras.Input(shape=(None, HEADS, 7)))


@case("XPos", "start_index", "call", ValueError, NEGATIVE_START, "negative")
def _():
    layers.XPos()(head_tensors(), start_index=-1, downscale=True)


@case("XPos", "positions", "call", ValueError, POSITIONS_BATCH, "batch")
def _():
    layers.XPos()(head_tensors(), positions=np.zeros((3, LENGTH), "int32"))


# === Bias layers ===

BIAS = {
    "ALiBiBias": lambda **kw: layers.ALiBiBias(**{"num_heads": HEADS, **kw}),
    "T5RelativePositionBias": lambda **kw: layers.T5RelativePositionBias(
        **{"num_heads": HEADS, **kw}
    ),
}

for _name, _make in BIAS.items():

    @case(
        _name,
        "rank",
        "call",
        ValueError,
        r"\(batch_size, num_heads=2, "
        r"query_length, key_length\).*inputs\.shape=\(2, 2, 5\)",
        "3d-scores",
    )
    def _(make=_make):
        make()(np.zeros((BATCH, HEADS, LENGTH), "float32"))

    @case(_name, "dtype", "call", TypeError, FLOAT_INPUTS, "int-scores")
    def _(make=_make):
        make()(scores("int32"))

    @case(
        _name,
        "width",
        "symbolic",
        ValueError,
        r"num_heads=2.*inputs\.shape=\(None, 3, None, None\)",
        "head-count",
    )
    def _(make=_make):
        make()(keras.Input(shape=(3, None, None)))

    @case(_name, "start_index", "call", ValueError, NEGATIVE_START, "negative")
    def _(make=_make):
        make()(scores(), start_index=-1)

    @case(_name, "positions", "call", ValueError, POSITIONS_LENGTH, "length")
    def _(make=_make):
        make()(scores(), positions=np.arange(4))

    @case(
        _name,
        "positions",
        "call",
        ValueError,
        r"`key_positions` must equal "
        r"the key length 7.*key_positions\.shape=\(5,\)",
        "key-length",
    )
    def _(make=_make):
        make()(scores(key=7), key_positions=np.arange(LENGTH))

    @case(
        _name, "positions", "call", TypeError, r"`key_positions` " + INT, "float-keys"
    )
    def _(make=_make):
        make()(scores(), key_positions=np.arange(LENGTH, dtype="float32"))

    @case(
        _name,
        "positions",
        "call",
        ValueError,
        r"`key_positions` is needed when `positions` is given",
        "lengths-differ",
    )
    def _(make=_make):
        make()(scores(key=7), positions=np.arange(LENGTH))

    @case(
        _name,
        "argument",
        "init",
        ValueError,
        r"`num_heads` must be a positive integer.*num_heads=0",
        "num-heads",
    )
    def _(make=_make):
        make(num_heads=0)


@case(
    "ALiBiBias",
    "argument",
    "init",
    ValueError,
    r"`causal` must be a boolean.*causal='yes'",
    "causal",
)
def _():
    layers.ALiBiBias(num_heads=HEADS, causal="yes")


@case(
    "T5RelativePositionBias",
    "width",
    "init",
    ValueError,
    r"`num_buckets` must be an even integer >= 4.*num_buckets=5",
    "odd-buckets",
)
def _():
    layers.T5RelativePositionBias(num_heads=HEADS, num_buckets=5)


@case(
    "T5RelativePositionBias",
    "argument",
    "init",
    ValueError,
    r"`max_distance` must exceed the exact range.*max_distance=4",
    "max-distance",
)
def _():
    layers.T5RelativePositionBias(num_heads=HEADS, num_buckets=32, max_distance=4)


@case(
    "alibi_slopes",
    "argument",
    "init",
    ValueError,
    r"`num_heads` must be a positive integer.*num_heads=2\.5",
    "float",
)
def _():
    layers.alibi_slopes(2.5)


@case(
    "alibi_slopes",
    "argument",
    "init",
    ValueError,
    r"`num_heads` must be a positive integer.*num_heads=0",
    "zero",
)
def _():
    layers.alibi_slopes(0)


@case(
    "t5_relative_position_bucket",
    "dtype",
    "call",
    TypeError,
    r"`relative_position` " + INT + r".*float32",
    "float",
)
def _():
    layers.t5_relative_position_bucket(np.array([1.5, -2.5], "float32"))


@case(
    "t5_relative_position_bucket",
    "argument",
    "init",
    ValueError,
    r"`bidirectional` must be a boolean.*bidirectional='yes'",
    "bidirectional",
)
def _():
    layers.t5_relative_position_bucket(np.arange(3), bidirectional="yes")


@case(
    "t5_relative_position_bucket",
    "argument",
    "init",
    ValueError,
    r"With bidirectional=False, `num_buckets` must be at least 2.*num_buckets=1",
    "num-buckets",
)
def _():
    layers.t5_relative_position_bucket(np.arange(3), bidirectional=False, num_buckets=1)


@case(
    "interpolate_position_table",
    "rank",
    "call",
    ValueError,
    r"`table` must have shape \(length, width\).*table\.shape=\(4,\)",
    "1d",
)
def _():
    layers.interpolate_position_table(np.arange(4.0), 8)


@case(
    "interpolate_position_table",
    "length",
    "call",
    ValueError,
    r"`max_length` must be at least the current table length 4.*max_length=3",
    "shrink",
)
def _():
    layers.interpolate_position_table(np.zeros((4, 2)), 3)


# === Shaw's RelativePositionEmbedding ===


def shaw(**kwargs):
    layer = layers.RelativePositionEmbedding(max_distance=3, **kwargs)
    layer(head_tensors(), head_tensors())
    return layer


@case(
    "RelativePositionEmbedding",
    "rank",
    "call",
    ValueError,
    r"`query` must have shape \(batch_size, q_len, num_heads, head_dim\).*"
    r"query\.shape=\(2, 5, 8\)",
    "3d-query",
)
def _():
    layers.RelativePositionEmbedding()(embeddings(), head_tensors())


@case(
    "RelativePositionEmbedding",
    "rank",
    "call",
    ValueError,
    r"`key` must have shape \(batch_size, k_len, num_heads, head_dim\).*"
    r"key\.shape=\(2, 5, 8\)",
    "3d-key",
)
def _():
    shaw()(head_tensors(), embeddings())


@case(
    "RelativePositionEmbedding",
    "dtype",
    "call",
    TypeError,
    r"floating-point `query`.*query\.dtype=int32",
    "int-query",
)
def _():
    shaw()(head_tensors("int32"), head_tensors())


@case(
    "RelativePositionEmbedding",
    "width",
    "call",
    ValueError,
    r"head_dim=4 the layer was built with.*\(2, 5, 2, 6\)",
    "head-dim",
)
def _():
    shaw()(head_tensors(shape=(BATCH, LENGTH, HEADS, 6)), head_tensors())


@case(
    "RelativePositionEmbedding",
    "mask",
    "call",
    ValueError,
    r"`key` must have shape.*batch size of `query`.*key\.shape=\(3, 5, 2, 4\)",
    "key-batch",
)
def _():
    shaw()(head_tensors(), head_tensors(shape=(3, LENGTH, HEADS, HEAD_DIM)))


@case(
    "RelativePositionEmbedding",
    "start_index",
    "call",
    ValueError,
    NEGATIVE_START,
    "negative",
)
def _():
    shaw()(head_tensors(), head_tensors(), start_index=-1)


@case(
    "RelativePositionEmbedding",
    "positions",
    "call",
    ValueError,
    POSITIONS_LENGTH,
    "length",
)
def _():
    shaw()(head_tensors(), head_tensors(), positions=np.arange(4))


@case(
    "RelativePositionEmbedding",
    "positions",
    "call",
    ValueError,
    r"`key_positions` must equal the key length 5",
    "key-length",
)
def _():
    shaw()(head_tensors(), head_tensors(), key_positions=np.arange(6))


@case(
    "RelativePositionEmbedding",
    "argument",
    "init",
    ValueError,
    r"`use_values` must be a boolean.*use_values=1",
    "use-values",
)
def _():
    layers.RelativePositionEmbedding(use_values=1)


@case(
    "RelativePositionEmbedding",
    "argument",
    "init",
    ValueError,
    r"`max_distance` must be a positive integer.*max_distance=0",
    "distance",
)
def _():
    layers.RelativePositionEmbedding(max_distance=0)


# === PositionalMultiHeadAttention ===


def attention(position="rotary", **kwargs):
    return layers.PositionalMultiHeadAttention(
        num_heads=HEADS, key_dim=HEAD_DIM, position=position, **kwargs
    )


@case(
    "PositionalMultiHeadAttention",
    "rank",
    "symbolic",
    ValueError,
    r"`query` must have shape \(batch_size, length, dim\).*query\.shape=\(None, 8\)",
    "2d-query",
)
def _():
    query = keras.Input(shape=(WIDTH,))
    attention()(query, query)


@case(
    "PositionalMultiHeadAttention",
    "rank",
    "call",
    ValueError,
    r"`value` must have shape \(batch_size, length, dim\).*\(2, 5, 2, 4\)",
    "4d-value",
)
def _():
    attention()(embeddings(), head_tensors())


@case(
    "PositionalMultiHeadAttention",
    "dtype",
    "call",
    TypeError,
    r"floating-point `query`.*query\.dtype=int32",
    "int-query",
)
def _():
    attention()(embeddings("int32"), embeddings())


@case(
    "PositionalMultiHeadAttention",
    "dtype",
    "symbolic",
    TypeError,
    r"floating-point `value`.*value\.dtype=int32",
    "int-value",
)
def _():
    attention()(
        keras.Input(shape=(None, WIDTH)),
        keras.Input(shape=(None, WIDTH), dtype="int32"),
    )


for _position in ("rotary", "xpos"):

    @case(
        "PositionalMultiHeadAttention",
        "width",
        "init",
        ValueError,
        rf"`key_dim` does not suit position='{_position}'.*must be even.*key_dim=5",
        f"odd-key-dim-{_position}",
    )
    def _(position=_position):
        layers.PositionalMultiHeadAttention(num_heads=2, key_dim=5, position=position)


@case(
    "PositionalMultiHeadAttention",
    "width",
    "call",
    ValueError,
    r"`cache` must have shape \(batch_size, 2, max_length, num_heads=2, "
    r"key_dim=4\).*cache\.shape=\(2, 2, 6, 2, 3\)",
    "cache-width",
)
def _():
    one = embeddings(shape=(BATCH, 1, WIDTH))
    cache = np.zeros((BATCH, 2, 6, HEADS, 3), "float32")
    attention()(one, one, cache=cache, cache_update_index=0)


@case(
    "PositionalMultiHeadAttention",
    "scheme",
    "init",
    ValueError,
    rf"`position` must be one of {ATTENTION_LIST}.*position='rope'",
    "name",
)
def _():
    attention(position="rope")


@case(
    "PositionalMultiHeadAttention",
    "scheme",
    "init",
    ValueError,
    r"`position` must be one of.*position=<Dense",
    "layer",
)
def _():
    attention(position=keras.layers.Dense(3))


@case(
    "PositionalMultiHeadAttention",
    "start_index",
    "call",
    ValueError,
    r"`cache_update_index` must be a non-negative integer.*cache_update_index=-1",
    "negative-cache-index",
)
def _():
    one = embeddings(shape=(BATCH, 1, WIDTH))
    cache = np.zeros((BATCH, 2, 6, HEADS, HEAD_DIM), "float32")
    attention()(one, one, cache=cache, cache_update_index=-1)


@case(
    "PositionalMultiHeadAttention",
    "start_index",
    "call",
    TypeError,
    r"`cache_update_index` " + INT,
    "float-cache-index",
)
def _():
    one = embeddings(shape=(BATCH, 1, WIDTH))
    cache = np.zeros((BATCH, 2, 6, HEADS, HEAD_DIM), "float32")
    attention()(one, one, cache=cache, cache_update_index=np.float32(1.0))


for _position in ("rotary", "alibi", "shaw"):

    @case(
        "PositionalMultiHeadAttention",
        "positions",
        "call",
        ValueError,
        POSITIONS_LENGTH,
        f"length-{_position}",
    )
    def _(position=_position):
        attention(position)(embeddings(), embeddings(), positions=np.arange(4))

    @case(
        "PositionalMultiHeadAttention",
        "positions",
        "call",
        ValueError,
        r"`key_positions` must equal the key length 7.*\(5,\)",
        f"key-length-{_position}",
    )
    def _(position=_position):
        value = embeddings(shape=(BATCH, 7, WIDTH))
        attention(position)(embeddings(), value, key_positions=np.arange(LENGTH))


@case(
    "PositionalMultiHeadAttention",
    "positions",
    "call",
    TypeError,
    r"`positions` " + INT,
    "float",
)
def _():
    attention("t5")(embeddings(), embeddings(), positions=np.arange(LENGTH) + 0.5)


@case(
    "PositionalMultiHeadAttention",
    "mask",
    "call",
    ValueError,
    r"`query_mask` must have shape \(batch_size, sequence_length\) = \(2, 5\).*"
    r"query_mask\.shape=\(2, 4\)",
    "query-mask",
)
def _():
    attention()(embeddings(), embeddings(), query_mask=np.ones((BATCH, 4), bool))


@case(
    "PositionalMultiHeadAttention",
    "mask",
    "call",
    ValueError,
    r"`value_mask` must have shape \(batch_size, sequence_length\) = \(2, 7\).*"
    r"value_mask\.shape=\(2, 5\)",
    "value-mask",
)
def _():
    value = embeddings(shape=(BATCH, 7, WIDTH))
    attention()(embeddings(), value, value_mask=np.ones((BATCH, LENGTH), bool))


@case(
    "PositionalMultiHeadAttention",
    "mask",
    "call",
    ValueError,
    r"`attention_mask` must broadcast to \(batch_size, query_length, key_length\)"
    r" = \(2, 5, 5\).*attention_mask\.shape=\(2, 4, 5\)",
    "attention-mask",
)
def _():
    mask = np.ones((BATCH, 4, LENGTH), bool)
    attention()(embeddings(), embeddings(), attention_mask=mask)


@case(
    "PositionalMultiHeadAttention",
    "mask",
    "call",
    ValueError,
    r"`attention_mask` must broadcast.*\(3, 5, 5\)",
    "attention-mask-batch",
)
def _():
    mask = np.ones((3, LENGTH, LENGTH), bool)
    attention("alibi")(embeddings(), embeddings(), attention_mask=mask)


@case(
    "PositionalMultiHeadAttention",
    "mask",
    "call",
    ValueError,
    r"`value` must have the batch size of `query` \(2\).*value\.shape=\(3, 5, 8\)",
    "value-batch",
)
def _():
    attention()(embeddings(), embeddings(shape=(3, LENGTH, WIDTH)))


@case(
    "PositionalMultiHeadAttention",
    "mask",
    "call",
    ValueError,
    r"`key` and `value` must have the same length.*key\.shape=\(2, 6, 8\)",
    "key-value-length",
)
def _():
    key = embeddings(shape=(BATCH, 6, WIDTH))
    attention()(embeddings(), embeddings(), key=key)


# === FeedForward ===


@case(
    "FeedForward",
    "rank",
    "call",
    ValueError,
    r"FeedForward expects inputs of shape \(\.\.\., feature_dim\).*\(8,\)",
    "1d",
)
def _():
    layers.FeedForward(intermediate_dim=4)(np.zeros((WIDTH,), "float32"))


@case(
    "FeedForward",
    "dtype",
    "call",
    TypeError,
    r"floating-point `inputs`.*inputs\.dtype=int32",
    "int",
)
def _():
    layers.FeedForward(intermediate_dim=4)(embeddings("int32"))


@case(
    "FeedForward",
    "argument",
    "init",
    ValueError,
    r"`dropout` must be a number in \[0, 1\).*dropout=1\.5",
    "dropout",
)
def _():
    layers.FeedForward(intermediate_dim=4, dropout=1.5)


# === Transformer blocks ===

BLOCKS = {
    "TransformerEncoder": (layers.TransformerEncoder, "inputs"),
    "TransformerDecoder": (layers.TransformerDecoder, "decoder_sequence"),
}

for _name, (_cls, _argument) in BLOCKS.items():

    @case(
        _name,
        "rank",
        "symbolic",
        ValueError,
        rf"`{_argument}` of shape \(batch_size, sequence_length, hidden_dim\).*"
        rf"{_argument}\.shape=\(None, 8\)",
        "2d",
    )
    def _(cls=_cls):
        cls(intermediate_dim=8, num_heads=HEADS)(keras.Input(shape=(WIDTH,)))

    @case(
        _name,
        "dtype",
        "call",
        TypeError,
        rf"floating-point `{_argument}`.*{_argument}\.dtype=int32",
        "int",
    )
    def _(cls=_cls):
        cls(intermediate_dim=8, num_heads=HEADS)(embeddings("int32"))

    @case(
        _name,
        "width",
        "symbolic",
        ValueError,
        r"width of the inputs \(8\) must be divisible by `num_heads`.*num_heads=3",
        "heads",
    )
    def _(cls=_cls):
        cls(intermediate_dim=8, num_heads=3)(keras.Input(shape=(None, WIDTH)))

    @case(
        _name,
        "width",
        "symbolic",
        ValueError,
        r"head size .*`num_heads`.*position='xpos'.*\(3\) must be even.*num_heads=2",
        "odd-head-dim",
    )
    def _(cls=_cls):
        block = cls(intermediate_dim=8, num_heads=HEADS, position="xpos")
        block(keras.Input(shape=(None, 6)))

    @case(
        _name,
        "scheme",
        "init",
        ValueError,
        rf"`position` must be one of {ATTENTION_LIST}.*AttentionPosition"
        r".*position='sinusoidal'",
        "name",
    )
    def _(cls=_cls):
        cls(intermediate_dim=8, num_heads=HEADS, position="sinusoidal")

    @case(_name, "positions", "call", ValueError, POSITIONS_LENGTH, "length")
    def _(cls=_cls):
        block = cls(intermediate_dim=8, num_heads=HEADS, position="rotary")
        block(embeddings(), positions=np.arange(4))


@case(
    "TransformerEncoder",
    "mask",
    "call",
    ValueError,
    r"`padding_mask` must have shape \(batch_size, sequence_length\) = \(2, 5\).*"
    r"padding_mask\.shape=\(2, 4\)",
    "padding-mask",
)
def _():
    encoder = layers.TransformerEncoder(intermediate_dim=8, num_heads=HEADS)
    encoder(embeddings(), padding_mask=np.ones((BATCH, 4), bool))


@case(
    "TransformerEncoder",
    "mask",
    "call",
    ValueError,
    r"`attention_mask` must broadcast to.*\(2, 5, 5\).*\(2, 5, 4\)",
    "attention-mask",
)
def _():
    encoder = layers.TransformerEncoder(intermediate_dim=8, num_heads=HEADS)
    encoder(embeddings(), attention_mask=np.ones((BATCH, LENGTH, 4), bool))


def decoder_with_memory():
    decoder = layers.TransformerDecoder(intermediate_dim=8, num_heads=HEADS)
    decoder(embeddings(), embeddings(shape=(BATCH, 7, WIDTH)))
    return decoder


@case(
    "TransformerDecoder",
    "mask",
    "call",
    ValueError,
    r"`decoder_padding_mask` must have shape.*= \(2, 5\).*\(2, 7\)",
    "decoder",
)
def _():
    decoder = layers.TransformerDecoder(intermediate_dim=8, num_heads=HEADS)
    decoder(embeddings(), decoder_padding_mask=np.ones((BATCH, 7), bool))


@case(
    "TransformerDecoder",
    "mask",
    "call",
    ValueError,
    r"`encoder_padding_mask` must have shape.*= \(2, 7\).*\(2, 5\)",
    "encoder",
)
def _():
    memory = embeddings(shape=(BATCH, 7, WIDTH))
    decoder_with_memory()(
        embeddings(), memory, encoder_padding_mask=np.ones((BATCH, LENGTH), bool)
    )


@case(
    "TransformerDecoder",
    "mask",
    "call",
    ValueError,
    r"`encoder_sequence` must have the batch size of `decoder_sequence` \(2\).*"
    r"\(3, 7, 8\)",
    "encoder-batch",
)
def _():
    decoder_with_memory()(embeddings(), embeddings(shape=(3, 7, WIDTH)))


@case(
    "TransformerDecoder",
    "mask",
    "call",
    ValueError,
    r"Pass `encoder_sequence` on every call if and only if",
    "encoder-missing",
)
def _():
    decoder_with_memory()(embeddings())


@case(
    "TransformerDecoder",
    "start_index",
    "call",
    ValueError,
    r"`cache_update_index` must be a non-negative integer.*=-1",
    "cache-index",
)
def _():
    decoder = layers.TransformerDecoder(intermediate_dim=8, num_heads=HEADS)
    one = embeddings(shape=(BATCH, 1, WIDTH))
    cache = np.zeros((BATCH, 2, 6, HEADS, HEAD_DIM), "float32")
    decoder(one, self_attention_cache=cache, self_attention_cache_update_index=-1)


# === Models ===

TINY = dict(
    vocabulary_size=11,
    max_length=8,
    hidden_dim=16,
    num_layers=1,
    num_heads=2,
    intermediate_dim=16,
)


def model(name, **kwargs):
    config = dict(TINY, **kwargs)
    if name == "TransformerClassifier":
        config.setdefault("num_classes", 3)
    return getattr(models, name)(**config)


def model_inputs(name, ids):
    if name == "Seq2SeqTransformer":
        return {"encoder_token_ids": ids, "decoder_token_ids": ids}
    return ids


for _name in MODEL_NAMES:

    @case(
        _name,
        "rank",
        "call",
        ValueError,
        r"token_ids.*Expected shape \(None, None\)",
        "3d-ids",
    )
    def _(name=_name):
        model(name)(model_inputs(name, token_ids((BATCH, LENGTH, 2))))

    @case(
        _name,
        "rank",
        "call",
        ValueError,
        r"token_ids.*Expected shape \(None, None\)",
        "1d-ids",
    )
    def _(name=_name):
        model(name)(model_inputs(name, token_ids((LENGTH,))))

    # A functional model casts its inputs to the `keras.Input` dtype (int32),
    # so 1.7 would silently become token 1: the model must refuse floats.
    @case(
        _name, "dtype", "call", TypeError, r"token_ids.*integer.*float32", "float-ids"
    )
    def _(name=_name):
        model(name)(model_inputs(name, token_ids(dtype="float32") + 0.7))

    @case(
        _name,
        "width",
        "init",
        ValueError,
        r"`hidden_dim` must be divisible by `num_heads`.*hidden_dim=30, "
        r"num_heads=4",
        "heads",
    )
    def _(name=_name):
        model(name, hidden_dim=30, num_heads=4)

    @case(
        _name,
        "width",
        "init",
        ValueError,
        r"`hidden_dim` / `num_heads` = 3.*must be even.*"
        r"hidden_dim=12, num_heads=4",
        "odd-head-dim",
    )
    def _(name=_name):
        model(name, hidden_dim=12, num_heads=4, position="rotary")

    for _position in ("learned", "learned_concat"):

        @case(
            _name,
            "length",
            "call",
            ValueError,
            r"= 9 > max_length \(8\)",
            f"long-{_position}",
        )
        def _(name=_name, position=_position):
            model(name, position=position)(model_inputs(name, token_ids((BATCH, 9))))

    @case(
        _name,
        "scheme",
        "init",
        ValueError,
        rf"`position` must be one of {MODEL_LIST}.*position='rope'",
        "position",
    )
    def _(name=_name):
        model(name, position="rope")


@case(
    "TransformerClassifier",
    "scheme",
    "init",
    ValueError,
    r"`pooling` must be one of \['mean', 'first'\].*pooling='max'",
    "pooling",
)
def _():
    model("TransformerClassifier", pooling="max")


@case(
    "TransformerLM",
    "start_index",
    "call",
    ValueError,
    r"`(start_index|cache_update_index)` must be a non-negative integer.*=-1",
    "cache",
)
def _():
    lm = model("TransformerLM")
    cache = np.zeros((BATCH, 1, 2, 8, 2, 8), "float32")
    lm.call_with_cache(token_ids((BATCH, 1)), cache, -1)


@case(
    "Seq2SeqTransformer",
    "mask",
    "call",
    ValueError,
    r"`encoder_sequence` must have the batch size of `decoder_sequence` \(2\)",
    "batch",
)
def _():
    model("Seq2SeqTransformer")(
        {"encoder_token_ids": token_ids((3, LENGTH)), "decoder_token_ids": token_ids()}
    )


@case(
    "Seq2SeqTransformer",
    "mask",
    "call",
    ValueError,
    r'Missing data for input "decoder_token_ids"',
    "missing-input",
)
def _():
    model("Seq2SeqTransformer")({"encoder_token_ids": token_ids()})


# === The tests ===


@pytest.mark.parametrize("row", CASES, ids=[row.id for row in CASES])
def test_bad_input_raises_naming_the_argument(row):
    with pytest.raises(row.error, match=row.match):
        row.trigger()
    record("bad inputs tried", 1)


def test_table_is_complete():
    public = {name for name in layers.__all__ if not name.startswith("_")} | set(
        MODEL_NAMES
    )
    assert set(REQUIRED) == public, (
        "REQUIRED must list every public layer, function and model: "
        f"missing {sorted(public - set(REQUIRED))}, "
        f"unknown {sorted(set(REQUIRED) - public)}"
    )
    covered = {(row.target, row.kind) for row in CASES}
    missing = [
        (target, kind)
        for target, kinds in sorted(REQUIRED.items())
        for kind in sorted(kinds)
        if (target, kind) not in covered
    ]
    assert not missing, f"no bad-input row for {missing}"
    ids = [row.id for row in CASES]
    assert len(ids) == len(set(ids)), "duplicate row ids"
    print(f"bad-input table: {len(CASES)} rows over {len(REQUIRED)} targets")


# === The model still works after the error ===

# The model-level "call" rows above, given to the trainer entry points
# (`fit`, `evaluate`, `predict` and their `*_on_batch` forms) of one model in
# turn. Keras' JAX trainer takes the variables out of the model for its
# compiled step, so an error raised inside the step used to leave the model
# without weights ("'NoneType' object is not callable" on the next call).
RECOVERY_ROWS = {
    "3d-ids": (ValueError, r"Expected shape \(None, None\)", token_ids((BATCH, 4, 2))),
    "1d-ids": (ValueError, r"Expected shape \(None, None\)", token_ids((4,))),
    "float-ids": (TypeError, r"integer.*float32", token_ids((BATCH, 4), "float32")),
    "long-learned": (ValueError, r"= 9 > max_length \(8\)", token_ids((BATCH, 9))),
}


def recovery_data(name, ids):
    """Inputs and targets of `name` for token ids `ids` (bad or good)."""
    length = ids.shape[-1] if ids.ndim > 1 else 1
    if name == "TransformerClassifier":
        return ids, np.zeros((ids.shape[0],), "int32")
    targets = np.ones((ids.shape[0], length), "int32")
    return model_inputs(name, ids), targets


def bad_recovery_inputs(name):
    for note, (error, match, ids) in RECOVERY_ROWS.items():
        yield note, error, match, recovery_data(name, ids)
    if name == "Seq2SeqTransformer":
        ids = token_ids((BATCH, 4))
        mismatched = {"encoder_token_ids": token_ids((3, 4)), "decoder_token_ids": ids}
        yield "batch", ValueError, "same batch size", (mismatched, np.ones((2, 4)))
        missing = {"encoder_token_ids": ids}
        yield (
            "missing-input",
            (ValueError, KeyError),
            "decoder_token_ids",
            (
                missing,
                np.ones((2, 4)),
            ),
        )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_fits_and_predicts_after_bad_input(name):
    network = model(name, position="learned")
    network.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    good_ids = np.array([[1, 2, 3, 0], [4, 5, 6, 7]], "int32")
    good_x, good_y = recovery_data(name, good_ids)
    tried = 0
    for note, error, match, (x, y) in bad_recovery_inputs(name):
        calls = {
            "predict": lambda: network.predict(x, verbose=0),
            "predict_on_batch": lambda: network.predict_on_batch(x),
            "fit": lambda: network.fit(x, y, epochs=1, verbose=0),
            "train_on_batch": lambda: network.train_on_batch(x, y),
            "evaluate": lambda: network.evaluate(x, y, verbose=0),
            "test_on_batch": lambda: network.test_on_batch(x, y),
        }
        for entry, call in calls.items():
            with pytest.raises(error, match=match):
                call()
            tried += 1
    history = network.fit(good_x, good_y, epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    predicted = network.predict(good_x, verbose=0)
    expected = keras.ops.convert_to_numpy(network(good_x, training=False))
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    assert np.isfinite(predicted).all()
    record("bad inputs the models recovered from", tried)

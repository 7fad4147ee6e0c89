"""What the generative models share: argument checks and keras-hub sampling.

Token id 0 is padding everywhere: prompts are right-padded with 0 (`generate()`
shifts left-padded prompts to the left), the models never generate 0, and
`generate()` returns 0 after a stop token.

Each model splits generation in two: `generate()` checks and converts its
arguments with numpy, and `generate_step()` is the tensor-only core (keras.ops
and a keras-hub sampler), which also runs inside a TensorFlow graph for
`keras_posenc.export.export_for_serving`.
"""

import numpy as np
from keras import ops

from keras_posenc.utils.masks import MASKED_LOGIT
from keras_posenc.utils.validation import check_bool
from keras_posenc.utils.validation import check_positive_int
from keras_posenc.utils.validation import import_keras_hub

SAMPLER_NAMES = ("greedy", "top_k", "top_p", "beam")


def get_sampler(sampler):
    """A keras-hub `Sampler` from a name in `SAMPLER_NAMES` or an instance."""
    keras_hub = import_keras_hub("`generate()` (keras-hub's samplers)")
    if isinstance(sampler, keras_hub.samplers.Sampler):
        return sampler
    if not isinstance(sampler, str) or sampler not in SAMPLER_NAMES:
        raise ValueError(
            f"`sampler` must be one of {list(SAMPLER_NAMES)} or a "
            f"`keras_hub.samplers.Sampler` instance. Received: sampler={sampler!r}"
        )
    return keras_hub.samplers.get(sampler)


def check_generate_arguments(max_length, model_max_length, stop_token_id, use_cache):
    """Returns `max_length` (defaulting to the model's) after checking all three."""
    if max_length is None:
        max_length = model_max_length
    check_positive_int("max_length", max_length)
    if max_length > model_max_length:
        raise ValueError(
            "`max_length` must not exceed the model's `max_length` "
            f"({model_max_length}). Received: max_length={max_length}"
        )
    if stop_token_id is not None:
        check_positive_int("stop_token_id", stop_token_id)
    check_bool("use_cache", use_cache)
    return int(max_length)


def right_padded_ids(name, token_ids, vocabulary_size):
    """Int32 numpy `(batch, length)` right-padded ids, and each row's length.

    Takes a tensor, an array or a list of lists (lists of unequal lengths are
    right-padded with 0). Rows may be right-padded or left-padded with 0;
    left-padded rows are shifted to the left, so the result is right-padded
    and a prompt's tokens sit at positions `0, 1, ...` either way. Raises a
    `ValueError` naming `name` and the first bad row unless every row is one
    non-empty run of ids in `[1, vocabulary_size)` with padding only before
    or after it.
    """
    if isinstance(token_ids, (list, tuple)) and all(
        isinstance(row, (list, tuple)) for row in token_ids
    ):
        length = max((len(row) for row in token_ids), default=0)
        token_ids = [list(row) + [0] * (length - len(row)) for row in token_ids]
    array = np.asarray(ops.convert_to_numpy(token_ids))
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty integer array of shape "
            f"(batch_size, length). Received: {name}.shape={array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`{name}` must hold integer ids. Received: dtype={array.dtype}"
        )
    if array.min() < 0 or array.max() >= vocabulary_size:
        raise ValueError(
            f"`{name}` must hold ids in [0, {vocabulary_size}). Received ids in "
            f"[{array.min()}, {array.max()}]"
        )
    real = array != 0
    lengths = real.sum(axis=1)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(
            f"Every row of `{name}` must hold at least one id. Row {empty[0]} "
            "is all padding (0)."
        )
    first = np.argmax(real, axis=1)
    columns = np.arange(array.shape[1])
    one_run = real == (
        (columns >= first[:, None]) & (columns < (first + lengths)[:, None])
    )
    broken = np.flatnonzero(~one_run.all(axis=1))
    if broken.size:
        raise ValueError(
            f"Every row of `{name}` must be one run of ids with padding (0) "
            f"only before it (left padding) or after it (right padding). Row "
            f"{broken[0]} has padding inside: {array[broken[0]].tolist()!r:.200}"
        )
    # Shift left-padded rows left: row r takes columns first[r] onwards.
    gather = np.minimum(columns[None, :] + first[:, None], array.shape[1] - 1)
    shifted = np.take_along_axis(array, gather, axis=1)
    shifted = np.where(columns[None, :] < lengths[:, None], shifted, 0)
    return shifted.astype("int32"), lengths


def pad_to(token_ids, length):
    """Right-pads `(batch, n)` ids with 0 to `(batch, length)`."""
    return np.pad(token_ids, ((0, 0), (0, length - token_ids.shape[1])))


def suppress_padding(logits):
    """`(batch, vocab)` float32 logits where the padding id 0 cannot be sampled.

    A generated 0 would read as padding: the full forward pass would mask it
    while the cache keeps it, and the output could not be told from padding.
    """
    logits = ops.cast(logits, "float32")
    is_padding = ops.expand_dims(ops.arange(ops.shape(logits)[-1]) == 0, 0)
    return ops.where(is_padding, MASKED_LOGIT, logits)


def clear_after_stop(token_ids, prompt_mask, stop_token_id):
    """Sets every generated id after the first generated stop id to 0.

    Args:
        token_ids: int tensor `(batch, length)`.
        prompt_mask: bool tensor `(batch, length)`, True for prompt ids (never
            read as a stop).
        stop_token_id: int or None (then `token_ids` is returned as is).

    Returns:
        An int tensor like `token_ids`.
    """
    if stop_token_id is None:
        return token_ids
    is_stop = ops.logical_and(
        ops.equal(token_ids, stop_token_id), ops.logical_not(prompt_mask)
    )
    is_stop = ops.cast(is_stop, "int32")
    after_stop = (ops.cumsum(is_stop, axis=1) - is_stop) > 0
    return ops.where(after_stop, ops.zeros_like(token_ids), token_ids)


def check_no_repeat_ngram_size(no_repeat_ngram_size):
    """Returns `no_repeat_ngram_size` (None or a positive int) after checking it."""
    if no_repeat_ngram_size is None:
        return None
    check_positive_int("no_repeat_ngram_size", no_repeat_ngram_size)
    return int(no_repeat_ngram_size)


def ban_repeated_ngrams(logits, token_ids, index, ngram_size):
    """Masks every id that would repeat an n-gram of `token_ids[:, :index]`.

    The next id goes at `index`; it would end the n-gram whose first
    `ngram_size - 1` ids are `token_ids[:, index - ngram_size + 1 : index]`.
    Each earlier n-gram with that same beginning bans its last id (the
    "no repeat n-gram" rule of Paulus et al., 2018, as in fairseq and
    HF transformers' `no_repeat_ngram_size`).

    Args:
        logits: float32 tensor `(batch, vocab)`.
        token_ids: int tensor `(batch, length)`; ids before `index` are real.
        index: int scalar tensor, the position of the next id.
        ngram_size: python int, at least 1.

    Returns:
        `logits` with the banned ids set to `MASKED_LOGIT`.
    """
    length = token_ids.shape[1]
    num_ngrams = length - ngram_size + 1
    if num_ngrams < 1:
        return logits
    batch_size = ops.shape(token_ids)[0]
    ngrams = ops.stack(
        [token_ids[:, k : k + num_ngrams] for k in range(ngram_size)], axis=-1
    )
    # Only n-grams that end before `index`, i.e. start at `index - n` or before.
    matches = ops.expand_dims(ops.arange(num_ngrams) <= index - ngram_size, 0)
    if ngram_size > 1:
        start = ops.maximum(index - ngram_size + 1, 0)
        prefix = ops.slice(token_ids, [0, start], [batch_size, ngram_size - 1])
        same = ops.all(
            ops.equal(ngrams[:, :, :-1], ops.expand_dims(prefix, 1)), axis=-1
        )
        matches = ops.logical_and(matches, same)
    else:
        matches = ops.broadcast_to(matches, (batch_size, num_ngrams))
    # Unbanned slots point at id 0, which `suppress_padding` masks already,
    # so every write sets MASKED_LOGIT and repeated indices cannot disagree.
    banned = ops.where(matches, ngrams[:, :, -1], ops.zeros_like(ngrams[:, :, -1]))
    rows = ops.broadcast_to(
        ops.expand_dims(ops.arange(batch_size, dtype=banned.dtype), 1),
        ops.shape(banned),
    )
    indices = ops.reshape(ops.stack([rows, banned], axis=-1), (-1, 2))
    updates = ops.full((ops.shape(indices)[0],), MASKED_LOGIT, dtype=logits.dtype)
    return ops.scatter_update(logits, indices, updates)


def next_token_scores(logits, token_ids, index, no_repeat_ngram_size):
    """Sampler scores `(batch, vocab)`: padding never chosen, repeats guarded.

    What every generation step applies to the model's logits for the id at
    `index`: `suppress_padding`, then `ban_repeated_ngrams` when
    `no_repeat_ngram_size` is set.
    """
    logits = suppress_padding(logits)
    if no_repeat_ngram_size is None:
        return logits
    return ban_repeated_ngrams(logits, token_ids, index, no_repeat_ngram_size)

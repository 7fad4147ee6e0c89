"""BYU Chit-Chat conversations as (context, reply) pairs, for chatbot training."""

import functools
import itertools
import json
import re

import numpy as np

from keras_posenc.datasets.data_dir import check_split
from keras_posenc.datasets.data_dir import check_test_fraction
from keras_posenc.datasets.data_dir import installed_package_dir
from keras_posenc.datasets.data_dir import missing_data_error
from keras_posenc.datasets.data_dir import resolve_data_dir
from keras_posenc.utils.validation import check_positive_int

_PACKAGE = "chitchat_dataset"
_HOW_TO_GET = (
    "install the data package: `pip install --no-deps chitchat-dataset==0.9.0` (or "
    "`make install`), or put its dataset.json as chitchat/dataset.json in the data "
    "directory (https://github.com/BYU-PCCL/chitchat-dataset)."
)
# Links and e-mail addresses: a reply generator should not learn to emit them.
_URL_OR_EMAIL = re.compile(
    r"\b(?:https?://|www\.)\S+|\b[\w.+-]+@[\w-]+\.[\w.-]+", re.IGNORECASE
)


def _dataset_path(data_dir):
    local = resolve_data_dir(data_dir) / "chitchat" / "dataset.json"
    if local.is_file():
        return local
    package = installed_package_dir(_PACKAGE)
    if package is not None and (package / "dataset.json").is_file():
        return package / "dataset.json"
    raise missing_data_error(local, _HOW_TO_GET)


def split_conversations(conversation_ids, test_fraction=0.1, seed=0):
    """Splits conversation ids into train and test ids, deterministically.

    The ids are sorted, shuffled with `numpy.random.RandomState(seed)`, and the first
    `round(test_fraction * len(ids))` become the test ids. Splitting conversations
    rather than pairs keeps every reply of a held-out conversation out of training
    (consecutive pairs share a turn, so a pair-level split would leak).

    Args:
        conversation_ids: iterable of str. Unique conversation ids.
        test_fraction: float in (0, 1). Fraction of conversations held out. Defaults
            to `0.1`.
        seed: int. Seed of the shuffle. Defaults to `0`.

    Returns:
        A tuple `(train_ids, test_ids)` of sorted lists.

    Example:

    >>> import keras_posenc
    >>> train_ids, test_ids = keras_posenc.datasets.split_conversations(
    ...     ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], test_fraction=0.2
    ... )
    >>> len(train_ids), len(test_ids), set(train_ids) & set(test_ids)
    (8, 2, set())
    """
    test_fraction = check_test_fraction(test_fraction)
    ids = sorted(conversation_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("`conversation_ids` must be unique.")
    order = np.random.RandomState(seed).permutation(len(ids))
    num_test = int(round(test_fraction * len(ids)))
    test = {ids[i] for i in order[:num_test]}
    return [i for i in ids if i not in test], [i for i in ids if i in test]


def _turns(conversation):
    """Joins consecutive utterances of one sender into a turn, whitespace normalized."""
    utterances = (u for message in conversation["messages"] for u in message)
    return tuple(
        " ".join(" ".join(u["text"] for u in group).split())
        for _, group in itertools.groupby(utterances, key=lambda u: u["sender"])
    )


@functools.lru_cache(maxsize=1)
def _read_conversations(path, modified_ns):
    """`{conversation_id: turns}` of a dataset file, cached (parsing takes seconds).

    `modified_ns` is part of the cache key so that an edited file is read again.
    """
    with open(path, encoding="utf-8") as file:
        conversations = json.load(file)
    return {key: _turns(value) for key, value in conversations.items()}


def _usable(turn, max_words):
    """Whether a turn may be a context or a reply: non-empty, short, no link."""
    if not turn or (max_words is not None and len(turn.split()) > max_words):
        return False
    # The substring test skips the (slow) regular expression for almost every turn.
    if "@" in turn or "://" in turn or "www." in turn.lower():
        return _URL_OR_EMAIL.search(turn) is None
    return True


def load_chitchat(max_words=30, split=None, test_fraction=0.1, seed=0, data_dir=None):
    """Loads the BYU Chit-Chat dataset as (context, reply) pairs of consecutive turns.

    7,168 English conversations between students (258,145 messages). Consecutive
    messages of one speaker are joined with a space into a turn; each turn and the next
    one form a `(context, reply)` pair: 131,569 pairs in all. Pairs with an empty side
    (21) or a URL or e-mail address on either side (33) are dropped, leaving 131,515;
    with the default `max_words=30` (both sides at most 30 whitespace-separated words)
    98,620 remain. The text is informal (typos, slang) and some mild profanity remains.

    `split="train"`/`"test"` splits by conversation with `split_conversations` (717 of
    the 7,168 conversations are held out with the defaults: 89,331 train and 9,289 test
    pairs), so no turn of a test conversation is seen in training. Pairs keep the
    file's conversation order.

    The data is read from `<data_dir>/chitchat/dataset.json` when it exists, else from
    the installed PyPI package `chitchat-dataset==0.9.0` (MIT license; the file is read
    as JSON, the package is never imported).

    Args:
        max_words: int or `None`. Keep pairs whose context and reply both have at most
            this many words; `None` keeps all. Defaults to `30`.
        split: `None`, `"train"` or `"test"`. `None` returns the pairs of every
            conversation. Defaults to `None`.
        test_fraction: float in (0, 1). Fraction of conversations in the test split.
            Defaults to `0.1`.
        seed: int. Seed of the conversation split. Defaults to `0`.
        data_dir: str or `Path`. Data directory to look in first. Defaults to
            `keras_posenc.datasets.data_dir()` (the `KERAS_POSENC_DATA` environment
            variable).

    Returns:
        A list of `(context, reply)` tuples of str.

    Raises:
        FileNotFoundError: neither the data directory nor the package holds the file.

    Example:

    >>> import keras_posenc
    >>> pairs = keras_posenc.datasets.load_chitchat(max_words=30)
    >>> len(pairs)
    98620
    >>> pairs[0]
    ('Hello How are you doing today?', 'whats up MD im doing good how are you doing?')

    References:
        - [BYU-PCCL/chitchat-dataset](https://github.com/BYU-PCCL/chitchat-dataset),
          the Chit-Chat Challenge corpus of Brigham Young University.
    """
    check_positive_int("max_words", max_words, allow_none=True)
    check_split(split, (None, "train", "test"))
    test_fraction = check_test_fraction(test_fraction)
    path = _dataset_path(data_dir)
    conversations = _read_conversations(str(path), path.stat().st_mtime_ns)
    keep = conversations.keys()
    if split is not None:
        train_ids, test_ids = split_conversations(conversations, test_fraction, seed)
        keep = set(train_ids if split == "train" else test_ids)

    pairs = []
    for key, turns in conversations.items():
        if key not in keep:
            continue
        usable = [_usable(turn, max_words) for turn in turns]
        pairs.extend(
            (context, reply)
            for context, reply, context_ok, reply_ok in zip(
                turns, turns[1:], usable, usable[1:]
            )
            if context_ok and reply_ok
        )
    return pairs

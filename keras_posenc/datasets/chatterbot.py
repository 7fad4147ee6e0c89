"""The English ChatterBot corpus as (prompt, reply) pairs: small and clean."""

from keras_posenc.datasets.data_dir import installed_package_dir
from keras_posenc.datasets.data_dir import missing_data_error
from keras_posenc.datasets.data_dir import resolve_data_dir

_PACKAGE = "chatterbot_corpus"
_HOW_TO_GET = (
    "install the data package: `pip install --no-deps chatterbot-corpus==1.3.3` (or "
    "`make install`), or put its English YAML files as chatterbot/english/*.yml in the "
    "data directory."
)
# Code snippets and the bot's own persona, not conversation.
SKIPPED_FILES = ("botprofile.yml", "coding.yml")


def _english_dir(data_dir):
    local = resolve_data_dir(data_dir) / "chatterbot" / "english"
    if local.is_dir():
        return local
    package = installed_package_dir(_PACKAGE)
    if package is not None and (package / "data" / "english").is_dir():
        return package / "data" / "english"
    raise missing_data_error(local, _HOW_TO_GET)


def load_chatterbot_corpus(unique=True, data_dir=None):
    """Loads the English ChatterBot corpus as (prompt, reply) pairs.

    Each YAML file lists conversations (lists of statements); every statement and the
    next one form a pair, as ChatterBot's list trainer uses them. The 19 English files
    other than `coding.yml` and `botprofile.yml` give 2,103 pairs in sorted file order
    (one malformed trivia entry, a bare string, is skipped). They repeat a lot:
    `tech_support.yml` holds 1,050 pairs of which only 10 differ, so by default
    repeated pairs are dropped, leaving 1,059. Too small to train a generator well; good
    for smoke tests and examples.

    The files are read from `<data_dir>/chatterbot/english/*.yml` when that folder
    exists, else from the installed PyPI package `chatterbot-corpus==1.3.3`
    (BSD-3-Clause; read as files, not imported). Parsing needs PyYAML (`pip install
    pyyaml`, part of the `notebooks` extra). Scalars are read as plain strings, so a
    reply such as "yes" or "no" stays text instead of becoming a YAML boolean.

    Args:
        unique: bool. Keep only the first occurrence of each `(prompt, reply)` pair.
            Defaults to `True`.
        data_dir: str or `Path`. Data directory to look in first. Defaults to
            `keras_posenc.datasets.data_dir()` (the `KERAS_POSENC_DATA` environment
            variable).

    Returns:
        A list of `(prompt, reply)` tuples of str.

    Raises:
        FileNotFoundError: neither the data directory nor the package holds the files.
        ImportError: PyYAML is not installed.

    Example:

    >>> import keras_posenc
    >>> pairs = keras_posenc.datasets.load_chatterbot_corpus()
    >>> len(pairs)
    1059
    >>> pairs[0][0]
    'What is AI?'
    >>> pairs[0][1][:40]
    'Artificial Intelligence is the branch of'

    References:
        - [gunthercox/chatterbot-corpus](https://github.com/gunthercox/chatterbot-corpus).
    """
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            "`load_chatterbot_corpus` needs PyYAML: `pip install pyyaml` (or install "
            "keras-posenc with the `notebooks` extra)."
        ) from error
    # BaseLoader keeps every scalar a str; the libyaml version is much faster.
    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
    folder = _english_dir(data_dir)
    files = [p for p in sorted(folder.glob("*.yml")) if p.name not in SKIPPED_FILES]
    if not files:
        raise missing_data_error(folder / "*.yml", _HOW_TO_GET)

    pairs, seen = [], set()
    for path in files:
        with open(path, encoding="utf-8") as file:
            corpus = yaml.load(file, Loader=loader)
        for conversation in corpus.get("conversations", []):
            # trivia.yml has one question whose "- - " lost a dash: a bare string.
            if not isinstance(conversation, list):
                continue
            statements = [" ".join(s.split()) for s in conversation]
            for pair in zip(statements, statements[1:]):
                if not all(pair) or (unique and pair in seen):
                    continue
                seen.add(pair)
                pairs.append(pair)
    return pairs

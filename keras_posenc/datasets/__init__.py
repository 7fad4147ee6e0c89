"""Loaders of the tutorial datasets, reading a local data directory first.

Every loader returns plain Python lists. `data_dir()` tells where files are looked
for.
"""

from keras_posenc.datasets.bbc_news import BBC_NEWS_CLASSES
from keras_posenc.datasets.bbc_news import load_bbc_news
from keras_posenc.datasets.chatterbot import load_chatterbot_corpus
from keras_posenc.datasets.chitchat import load_chitchat
from keras_posenc.datasets.chitchat import split_conversations
from keras_posenc.datasets.data_dir import data_dir
from keras_posenc.datasets.dialogsum import load_dialogsum

__all__ = [
    "BBC_NEWS_CLASSES",
    "data_dir",
    "load_bbc_news",
    "load_chatterbot_corpus",
    "load_chitchat",
    "load_dialogsum",
    "split_conversations",
]

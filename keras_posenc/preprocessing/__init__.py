"""Token-id sequences in the text conventions of the exported serving models."""

from keras_posenc.preprocessing.text_sequences import chat_prompts
from keras_posenc.preprocessing.text_sequences import chat_sequences
from keras_posenc.preprocessing.text_sequences import decode_generated
from keras_posenc.preprocessing.text_sequences import encode_texts
from keras_posenc.preprocessing.text_sequences import summarization_sequences

__all__ = [
    "chat_prompts",
    "chat_sequences",
    "decode_generated",
    "encode_texts",
    "summarization_sequences",
]

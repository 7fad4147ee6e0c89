"""Token-id sequences in the text conventions of the exported serving models,
and position ids for multi-axis rotary embeddings."""

from keras_posenc.preprocessing.multi_axis_positions import grid_position_ids
from keras_posenc.preprocessing.multi_axis_positions import multi_axis_position_ids
from keras_posenc.preprocessing.readable_text import readable_text
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
    "grid_position_ids",
    "multi_axis_position_ids",
    "readable_text",
    "summarization_sequences",
]

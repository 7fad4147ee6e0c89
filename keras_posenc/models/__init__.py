"""Ready models of keras_posenc."""

from keras_posenc.models.seq2seq_transformer import Seq2SeqTransformer
from keras_posenc.models.transformer_classifier import TransformerClassifier
from keras_posenc.models.transformer_lm import TransformerLM
from keras_posenc.models.transformer_model import MODEL_POSITIONS

__all__ = [
    "MODEL_POSITIONS",
    "Seq2SeqTransformer",
    "TransformerClassifier",
    "TransformerLM",
]

"""Export of the ready models as TensorFlow SavedModels that serve raw text.

`export_for_serving(model, tokenizer, path, ...)` writes a SavedModel for TF
Serving (`saved_models/NAME/VERSION/`) whose `serving_default` signature takes
`text`, a 1-D `tf.string` batch, tokenizes it in the graph and returns:

- `TransformerClassifier`: `probabilities` (float32 `(batch, num_classes)`)
  and `label` (`tf.string (batch,)`);
- `TransformerLM` and `Seq2SeqTransformer`: `generated_text`
  (`tf.string (batch,)`).

Load it with `import tensorflow_text` (registers the tokenizer's ops) and
`tf.saved_model.load(path)`; keras_posenc is not needed. `path/assets.extra/`
holds `vocabulary.txt`, `tokenizer.json` and, for a classifier, `labels.txt`.

Text conventions, shared by training and serving (`keras_posenc.preprocessing`
builds the training sequences); `[PAD]`, `[BOS]`, `[EOS]` and `[SEP]` are the
reserved tokens of `keras_posenc.tokenizers` (ids 0, 2, 3, 4):

- Classifier: ids = `tokenizer(text)` truncated, or right-padded with 0, to
  `sequence_length` (the tokenizer's, unless given). No special tokens.
- `TransformerLM` (chat): training rows are `[BOS] context [SEP] reply [EOS]`,
  right-padded with 0. Serving builds the prompt `[BOS] text [SEP]` of at most
  `max_prompt_length` ids (default `max_length // 2`; a longer text keeps its
  LAST tokens, so the reply has at least `max_length - max_prompt_length` ids
  of room), generates until `[EOS]` or `max_length`, and returns the
  detokenized ids after `[SEP]` and before `[EOS]`.
- `Seq2SeqTransformer` (summarization): encoder ids = `tokenizer(source)` cut
  to `sequence_length` (the encoder length), no special tokens; decoder rows
  `[BOS] target [EOS]`. Serving decodes from `[BOS]` until `[EOS]` or
  `max_length` and returns the detokenized ids between them.

Detokenized text is made readable by `keras_posenc.preprocessing.readable_text`
(`"I'm here, world!"` comes back as `"i'm here, world!"` from a lowercasing
tokenizer, not `"i ' m here , world !"`), the same rules as `decode_generated`;
`[UNK]` is kept.
"""

from keras_posenc.export.export_for_serving import export_for_serving

__all__ = ["export_for_serving"]

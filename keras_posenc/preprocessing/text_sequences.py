"""Token-id sequences in the text conventions that training and serving share.

The conventions (also described in `keras_posenc.export`):

- Classifier: `tokenizer(text)` truncated or right-padded with 0 to
  `sequence_length`; no special tokens.
- Chat (`TransformerLM`): training rows `[BOS] context [SEP] reply [EOS]`,
  right-padded with 0. The prompt part `[BOS] context [SEP]` is at most
  `max_prompt_length` ids: a longer context keeps its last tokens. The reply
  and its `[EOS]` fill the rest of the row (cut at the end if too long). At
  serving time the prompt is `[BOS] context [SEP]` and the reply is what the
  model generates after it, up to `[EOS]`.
- Summarization (`Seq2SeqTransformer`): encoder ids as for the classifier
  (no special tokens, truncated to the encoder length); decoder rows
  `[BOS] target [EOS]`. Decoding starts from `[BOS]` and stops at `[EOS]`.

These helpers run in Python (the keras-hub tokenizer's Python path, on any
backend); `keras_posenc.export` builds the same ids with TensorFlow ops inside
the serving graph.
"""

import numpy as np

from keras_posenc.preprocessing.readable_text import readable_text
from keras_posenc.utils.validation import check_positive_int


def _check_texts(name, texts):
    if isinstance(texts, (str, bytes)) or not len(texts):
        raise ValueError(
            f"`{name}` must be a non-empty list of strings. "
            f"Received: {name}={texts!r:.80}"
        )
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(
                f"`{name}` must hold strings only. Received an item of type "
                f"{type(text).__name__}: {text!r:.80}"
            )
    return texts


def special_token_id(tokenizer, token):
    """The id of `token` (e.g. `"[EOS]"`) in `tokenizer`'s vocabulary.

    Raises a `ValueError` naming the token when the vocabulary lacks it.
    """
    vocabulary = tokenizer.get_vocabulary()
    if token not in vocabulary:
        raise ValueError(
            f"The tokenizer's vocabulary has no {token} token. Fit it with "
            "`keras_posenc.tokenizers.fit_word_piece_tokenizer`, which reserves "
            "[PAD], [UNK], [BOS], [EOS] and [SEP] at ids 0-4."
        )
    return vocabulary.index(token)


def unpadded_tokenizer(tokenizer):
    """`tokenizer` itself, or its twin without `sequence_length` (ragged ids)."""
    if getattr(tokenizer, "sequence_length", None) is None:
        return tokenizer
    config = tokenizer.get_config()
    config["sequence_length"] = None
    twin = type(tokenizer).from_config(config)
    twin.set_vocabulary(tokenizer.get_vocabulary())
    return twin


def token_id_lists(tokenizer, texts):
    """The untruncated token ids of each text, as a list of lists of ints."""
    ids = unpadded_tokenizer(tokenizer).tokenize(list(texts))
    if hasattr(ids, "to_list"):  # a tf.RaggedTensor
        ids = ids.to_list()
    return [[int(i) for i in np.asarray(row).reshape(-1)] for row in ids]


def _right_pad(rows, length):
    output = np.zeros((len(rows), length), "int32")
    for index, row in enumerate(rows):
        row = row[:length]
        output[index, : len(row)] = row
    return output


def encode_texts(tokenizer, texts, sequence_length=None):
    """Token ids of `texts`, truncated or right-padded with 0, no special tokens.

    The classifier's inputs and the summarizer's encoder inputs.

    Args:
        tokenizer: a keras-hub tokenizer, e.g. from
            `keras_posenc.tokenizers.fit_word_piece_tokenizer`.
        texts: list of str.
        sequence_length: int. Length of every row. Defaults to the tokenizer's
            `sequence_length`.

    Returns:
        Int32 numpy array `(len(texts), sequence_length)`.

    Example:

    >>> import keras_posenc
    >>> tokenizer = keras_posenc.tokenizers.fit_word_piece_tokenizer(
    ...     ["the cat sat", "the dog sat"] * 20, vocabulary_size=30)
    >>> ids = keras_posenc.preprocessing.encode_texts(
    ...     tokenizer, ["the cat sat"], sequence_length=5)
    >>> [tokenizer.id_to_token(int(i)) for i in ids[0]]
    ['the', 'cat', 'sat', '[PAD]', '[PAD]']
    """
    texts = _check_texts("texts", texts)
    if sequence_length is None:
        sequence_length = getattr(tokenizer, "sequence_length", None)
    check_positive_int("sequence_length", sequence_length)
    return _right_pad(token_id_lists(tokenizer, texts), sequence_length)


def _check_prompt_length(sequence_length, max_prompt_length):
    check_positive_int("sequence_length", sequence_length)
    if max_prompt_length is None:
        max_prompt_length = sequence_length // 2
    check_positive_int("max_prompt_length", max_prompt_length)
    if not 3 <= max_prompt_length < sequence_length:
        raise ValueError(
            "`max_prompt_length` must be at least 3 ([BOS], one token, [SEP]) "
            f"and below the sequence length {sequence_length}. Received: "
            f"max_prompt_length={max_prompt_length}"
        )
    return max_prompt_length


def chat_prompts(tokenizer, contexts, max_prompt_length):
    """`[BOS] context [SEP]` prompts, a long context keeping its last tokens.

    Args:
        tokenizer: a keras-hub tokenizer with `[BOS]` and `[SEP]` tokens.
        contexts: list of str.
        max_prompt_length: int >= 3. Most ids in a prompt.

    Returns:
        A list of lists of ints (one prompt per context, unpadded), ready for
        `TransformerLM.generate()`.
    """
    contexts = _check_texts("contexts", contexts)
    check_positive_int("max_prompt_length", max_prompt_length)
    if max_prompt_length < 3:
        raise ValueError(
            "`max_prompt_length` must be at least 3 ([BOS], one token, [SEP]). "
            f"Received: max_prompt_length={max_prompt_length}"
        )
    bos = special_token_id(tokenizer, "[BOS]")
    sep = special_token_id(tokenizer, "[SEP]")
    keep = max_prompt_length - 2
    return [
        [bos] + ids[max(len(ids) - keep, 0) :] + [sep]
        for ids in token_id_lists(tokenizer, contexts)
    ]


def chat_sequences(
    tokenizer, contexts, replies, sequence_length, max_prompt_length=None
):
    """`[BOS] context [SEP] reply [EOS]` training rows for a `TransformerLM`.

    The prompt part is cut as in `chat_prompts` (the last context tokens are
    kept), then the reply and its `[EOS]` fill the row and are cut at the end
    if longer. Train on `rows[:, :-1]` to predict `rows[:, 1:]`.

    Args:
        tokenizer: a keras-hub tokenizer with `[BOS]`, `[EOS]` and `[SEP]`.
        contexts: list of str.
        replies: list of str, one per context.
        sequence_length: int. Length of every row.
        max_prompt_length: int. Most ids of `[BOS] context [SEP]`, at least
            3 and below `sequence_length`. Pass the same value to
            `export_for_serving`. Defaults to `sequence_length // 2`.

    Returns:
        Int32 numpy array `(len(contexts), sequence_length)`, right-padded
        with 0.

    Example:

    >>> import keras_posenc
    >>> tokenizer = keras_posenc.tokenizers.fit_word_piece_tokenizer(
    ...     ["hi there", "hello you"] * 20, vocabulary_size=40)
    >>> rows = keras_posenc.preprocessing.chat_sequences(
    ...     tokenizer, ["hi there"], ["hello you"], sequence_length=8)
    >>> [tokenizer.id_to_token(int(i)) for i in rows[0]]
    ['[BOS]', 'hi', 'there', '[SEP]', 'hello', 'you', '[EOS]', '[PAD]']
    """
    max_prompt_length = _check_prompt_length(sequence_length, max_prompt_length)
    replies = _check_texts("replies", replies)
    prompts = chat_prompts(tokenizer, contexts, max_prompt_length)
    if len(prompts) != len(replies):
        raise ValueError(
            "`contexts` and `replies` must have the same length. Received: "
            f"{len(prompts)} contexts and {len(replies)} replies"
        )
    eos = special_token_id(tokenizer, "[EOS]")
    rows = [
        prompt + reply + [eos]
        for prompt, reply in zip(prompts, token_id_lists(tokenizer, replies))
    ]
    return _right_pad(rows, sequence_length)


def summarization_sequences(
    tokenizer, sources, targets, encoder_length, decoder_length
):
    """Encoder ids and `[BOS] target [EOS]` decoder rows for a `Seq2SeqTransformer`.

    Train with `{"encoder_token_ids": encoder_ids, "decoder_token_ids":
    decoder_ids[:, :-1]}` to predict `decoder_ids[:, 1:]`.

    Args:
        tokenizer: a keras-hub tokenizer with `[BOS]` and `[EOS]` tokens.
        sources: list of str.
        targets: list of str, one per source.
        encoder_length: int. Length of the encoder rows (sources are cut at
            the end); pass it as `sequence_length` to `export_for_serving`.
        decoder_length: int. Length of the decoder rows (a long target loses
            its end and its `[EOS]`).

    Returns:
        A tuple of int32 numpy arrays `(encoder_ids, decoder_ids)` of shapes
        `(n, encoder_length)` and `(n, decoder_length)`, right-padded with 0.
    """
    sources = _check_texts("sources", sources)
    targets = _check_texts("targets", targets)
    if len(sources) != len(targets):
        raise ValueError(
            "`sources` and `targets` must have the same length. Received: "
            f"{len(sources)} sources and {len(targets)} targets"
        )
    check_positive_int("decoder_length", decoder_length)
    encoder_ids = encode_texts(tokenizer, sources, encoder_length)
    bos = special_token_id(tokenizer, "[BOS]")
    eos = special_token_id(tokenizer, "[EOS]")
    rows = [[bos] + ids + [eos] for ids in token_id_lists(tokenizer, targets)]
    return encoder_ids, _right_pad(rows, decoder_length)


def decode_generated(tokenizer, token_ids, prompt_lengths):
    """Texts of the ids generated after each prompt, up to the first `[EOS]`.

    Args:
        tokenizer: a keras-hub tokenizer with an `[EOS]` token.
        token_ids: int array `(batch, length)` from `generate()`.
        prompt_lengths: int or sequence of ints. Ids before this index in a
            row are the prompt (`1` for a `Seq2SeqTransformer`, the prompt's
            length for a `TransformerLM`).

    Returns:
        A list of str, one per row (`""` when nothing was generated), made
        readable by `readable_text` (`"i'm"`, `"late."`), as the exported
        generators serve them.
    """
    token_ids = np.asarray(token_ids)
    eos = special_token_id(tokenizer, "[EOS]")
    if np.ndim(prompt_lengths) == 0:
        prompt_lengths = [int(prompt_lengths)] * len(token_ids)
    texts = []
    for row, start in zip(token_ids, prompt_lengths):
        reply = []
        for token_id in row[int(start) :]:
            if token_id == eos:
                break
            if token_id != 0:
                reply.append(int(token_id))
        texts.append(_to_str(tokenizer.detokenize([reply])[0]) if reply else "")
    return readable_text(texts) if texts else texts


def _to_str(value):
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)

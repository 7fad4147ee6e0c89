"""Detokenized text as a reader expects it: `i'm`, `it's`, `late.`"""

# A WordPiece vocabulary splits punctuation off the words, and detokenizing
# joins every token with a space: "i ' m not sure , it ' s late ." These RE2
# rules (`tf.strings.regex_replace`) join them back, in Python and in the
# exported serving graphs alike, in this order.
READABLE_TEXT_RULES = (
    # Contractions and possessives: "i ' m" -> "i'm", "don ' t" -> "don't".
    (r"(?i)\s+'\s*(s|m|d|t|re|ve|ll)\b", r"'\1"),
    # No space before closing punctuation: "late ." -> "late.".
    (r"\s+([.,!?;:%)\]}])", r"\1"),
    # None after an opening bracket: "( see" -> "(see".
    (r"([(\[{])\s+", r"\1"),
)


def readable_text(text):
    """Joins what a word-level detokenizer spaced apart.

    `decode_generated` and the exported generators (`export_for_serving`)
    apply it to what they detokenize, so replies read as text and the served
    text equals the in-memory one.

    Args:
        text: a str, a list of str, or a `tf.string` tensor (also inside a
            `tf.function`).

    Returns:
        The same kind as `text`: a str, a list of str or a `tf.string` tensor.

    Example:

    >>> import keras_posenc
    >>> keras_posenc.preprocessing.readable_text("i ' m not sure , it ' s late .")
    "i'm not sure, it's late."
    """
    import tensorflow as tf

    tensor = text if tf.is_tensor(text) else tf.constant(text, tf.string)
    for pattern, rewrite in READABLE_TEXT_RULES:
        tensor = tf.strings.regex_replace(tensor, pattern, rewrite)
    if tf.is_tensor(text):
        return tensor
    if isinstance(text, (str, bytes)):
        return tensor.numpy().decode("utf-8")
    return [value.decode("utf-8") for value in tensor.numpy().tolist()]

"""A misspelled constructor argument of a ready model is an error, not a default."""

import inspect

import pytest

from keras_posenc import models

REQUIRED = {
    "TransformerClassifier": {"vocabulary_size": 11, "num_classes": 3, "max_length": 8},
    "TransformerLM": {"vocabulary_size": 11, "max_length": 8},
    "Seq2SeqTransformer": {"vocabulary_size": 11, "max_length": 8},
}


@pytest.mark.parametrize("name", list(REQUIRED))
def test_misspelled_argument_raises_naming_it_and_the_right_name(name):
    cls = getattr(models, name)
    arguments = [
        argument
        for argument in inspect.signature(cls.__init__).parameters
        if argument not in ("self", "kwargs")
    ] + list(cls.MODEL_KEYWORDS)
    for argument in arguments:
        typo = argument[:-1]
        with pytest.raises(TypeError) as error:
            cls(**REQUIRED[name], **{typo: 1})
        message = str(error.value)
        assert f"{typo!r} (did you mean {argument!r}?)" in message, message
        assert name in message


def test_issue_examples():
    with pytest.raises(TypeError, match=r"'num_head' \(did you mean 'num_heads'\?\)"):
        models.TransformerLM(
            vocabulary_size=11, max_length=8, num_head=8, droput=0.5, scaling="yarn"
        )
    with pytest.raises(TypeError, match=r"'poolng' \(did you mean 'pooling'\?\)"):
        models.TransformerClassifier(
            vocabulary_size=11, num_classes=3, max_length=8, poolng="first"
        )

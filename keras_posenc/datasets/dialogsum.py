"""DialogSum: everyday two-person dialogues with human-written summaries."""

import ast
import json

from keras_posenc.datasets.data_dir import check_split
from keras_posenc.datasets.data_dir import find_data_file

# Not a pinned revision: the `main` branch of the authors' repository.
DIALOGSUM_URL = (
    "https://raw.githubusercontent.com/cylnlp/dialogsum/main/DialogSum_Data/"
)
_REPOSITORY = "https://github.com/cylnlp/dialogsum"
# The test split has three reference summaries per dialogue.
_REFERENCE_KEYS = ("summary1", "summary2", "summary3")


def _parse_line(line):
    # The repository's DialogSum_Data.zip stores Python dict literals, not JSON.
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return ast.literal_eval(line)


def load_dialogsum(split="train", data_dir=None, all_references=False):
    """Loads a split of DialogSum as lists of dialogues and summaries.

    DialogSum (Chen et al., 2021) holds 13,460 dialogues of everyday life (school, work,
    shopping, travel, ...) with a summary written by an annotator: 12,460 train, 500 dev
    and 500 test dialogues. Speaker turns are separated by `"\\n"` and start with
    `#Person1#:` or `#Person2#:`; summaries refer to the speakers with the same markers,
    so keep them as special tokens. The text has some tokenization artefacts
    ("I ' Ve"), returned unchanged.

    The file `<data_dir>/dialogsum/dialogsum.<split>.jsonl` is read (one JSON object per
    line with `fname`, `dialogue`, `summary`, `topic`; the test split has
    `summary1`..`summary3`). When it is missing it is downloaded there from the `main`
    branch of the authors' repository, https://github.com/cylnlp/dialogsum, folder
    `DialogSum_Data/` (a branch, not a pinned release: if the download fails, take the
    files from that folder or from the repository's `DialogSum_Data.zip`).

    License: CC BY-NC-SA 4.0 (attribution, non-commercial, share-alike); the copyright
    of the dialogues belongs to their authors. Cite: Yulong Chen, Yang Liu, Liang Chen
    and Yue Zhang, "DialogSum: A Real-Life Scenario Dialogue Summarization Dataset",
    Findings of the Association for Computational Linguistics: ACL-IJCNLP 2021,
    pages 5062-5074.

    Args:
        split: `"train"`, `"dev"` or `"test"`. Defaults to `"train"`.
        data_dir: str or `Path`. Data directory. Defaults to
            `keras_posenc.datasets.data_dir()` (the `KERAS_POSENC_DATA` environment
            variable).
        all_references: bool. Return every reference summary of a dialogue as a list
            of str (three for the test split, one for train and dev) instead of the
            first one as a str. Defaults to `False`.

    Returns:
        A tuple `(dialogues, summaries)` of Python lists, in file order: dialogues are
        str, summaries str (lists of str with `all_references=True`).

    Raises:
        FileNotFoundError: the file is missing and could not be downloaded.

    Example:

    >>> import keras_posenc
    >>> dialogues, summaries = keras_posenc.datasets.load_dialogsum("dev")
    >>> len(dialogues), len(summaries)
    (500, 500)
    >>> dialogues[0].split("\\n")[0][:10]
    '#Person1#:'

    References:
        - [Chen et al., 2021](https://aclanthology.org/2021.findings-acl.449),
          "DialogSum: A Real-Life Scenario Dialogue Summarization Dataset".
    """
    check_split(split, ("train", "dev", "test"))
    file_name = f"dialogsum.{split}.jsonl"
    path = find_data_file(
        f"dialogsum/{file_name}",
        directory=data_dir,
        origin=DIALOGSUM_URL + file_name,
        how_to_get=(
            f"download {file_name} from the folder DialogSum_Data/ of {_REPOSITORY} "
            "(or unpack the repository's DialogSum_Data.zip) into "
            "<data dir>/dialogsum/."
        ),
    )
    dialogues, summaries = [], []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.strip():
                continue
            row = _parse_line(line)
            dialogues.append(row["dialogue"])
            if "summary" in row:
                references = [row["summary"]]
            else:
                references = [row[key] for key in _REFERENCE_KEYS if key in row]
            summaries.append(references if all_references else references[0])
    return dialogues, summaries

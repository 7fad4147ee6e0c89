"""Smoke test of `benchmarks.profiles` in quick mode (no timing asserts).

Runs in the PyTorch pass only: there every section runs, the backend-neutral
bias split included.
"""

import re

import keras
import pytest

from benchmarks import profiles

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        keras.backend.backend() != "torch", reason="the PyTorch pass runs every section"
    ),
]


def test_quick_profiles_list_the_kernels_and_layer_calls(tmp_path):
    path = profiles.main(["--quick", "--output-dir", str(tmp_path)])
    with open(path) as file:
        text = file.read()
    for title in (
        "### T5 bias",
        "### Shaw",
        "### ALiBi",
        "## Subnormal",
        "## Learned biases",
    ):
        assert title in text
    # Every profiled run lists the kernels that took its time.
    assert text.count("| `aten::") >= 5 * 9
    (layer_calls,) = re.findall(r"(\d+) Keras `Layer.__call__` per generated", text)
    assert int(layer_calls) > 0

"""The README's "Write your own position scheme" example runs as printed."""

import re

import numpy as np

from tests.harness import REPO_ROOT


def _section_code(title):
    with open(f"{REPO_ROOT}/README.md", encoding="utf-8") as file:
        readme = file.read()
    section = readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_own_position_scheme_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(_section_code("Write your own position scheme"), namespace)
    model, loaded = namespace["model"], namespace["loaded"]
    # Trained weights came back, and the scheme is in every block.
    for saved, restored in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(saved, restored)
    scheme = namespace["LogDistanceBias"]
    assert all(
        isinstance(layer.self_attention.position_layer, scheme)
        for layer in loaded.decoder_layers
    )
    generated = capsys.readouterr().out
    assert generated.startswith("[[ 5  6  7")

"""Smoke test of `benchmarks.speed` and its report in quick mode (no timing asserts).

Runs every part on the current backend at the smallest sizes, then renders the
markdown table and the plot from the rows, so that `make bench` cannot break
unnoticed. Speed goals live in `benchmarks/`, never here.
"""

import math

import keras
import pytest

from benchmarks import report
from benchmarks import speed

pytestmark = pytest.mark.slow


def assert_positive_numbers(row):
    for key, value in row.items():
        if isinstance(value, float) and key != "dropout":
            assert math.isfinite(value) and value > 0, (key, row)


# One scheme per code path of the attention part: rotated queries and keys, a
# learned bias, Shaw's terms, a bias read from the inputs, keras-hub's layers.
# Every scheme is one more compilation, and the full run times them all.
SMOKE_SCHEMES = ("rotary", "t5", "shaw", "forgetting") + speed.KERAS_HUB_SCHEMES


def test_every_part_runs_and_renders(tmp_path):
    results = speed.run(list(speed.PARTS), quick=True, schemes=SMOKE_SCHEMES)
    backend = keras.config.backend()
    sizes = speed.settings(quick=True)

    absolute = results["absolute"]["rows"]
    assert {row["encoding"] for row in absolute} == {
        f"{kind} {merge}"
        for kind in ("sinusoidal", "learned")
        for merge in ("add", "concat")
    } | {"keras-hub sine add"}
    attention = results["attention"]["rows"]
    assert {row["scheme"] for row in attention} == set(SMOKE_SCHEMES)
    assert all(("memory_ratio" in row) == (backend == "jax") for row in attention)
    shaw = results["shaw_memory"]["rows"]
    if backend == "jax":
        assert [row["length"] for row in shaw] == sizes["shaw_memory"]["lengths"]
        # The (L, L, d) tensors of the naive form outgrow ours.
        assert all(row["naive_mib"] > row["ours_mib"] for row in shaw)
    else:
        assert shaw == []
    assert [row["dropout"] for row in results["encoder_block"]["rows"]] == [0.0, 0.1]
    (generation,) = results["generation"]["rows"]
    assert generation["same_tokens"], "cached and uncached greedy tokens differ"
    for part in results.values():
        for row in part["rows"]:
            assert_positive_numbers(row)

    run = {
        "machine": report.machine(),
        "date": report.today(),
        "quick": True,
        "backends": {backend: {"versions": speed.backend_versions(), "parts": results}},
    }
    table = report.markdown(run)
    for heading in ("Absolute encodings", "Attention with each", "Encoder block"):
        assert heading in table
    assert report.plot(run, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_a_scheme_past_its_length_cap_is_left_out_and_the_report_says_why(
    monkeypatch,
):
    monkeypatch.setitem(speed.LENGTH_CAPS, "rotary", (16, "a cap for this test"))
    results = speed.run(
        ["attention"], quick=True, schemes=["rotary", "alibi"], lengths=[16, 32]
    )
    measured = {(row["scheme"], row["length"]) for row in results["attention"]["rows"]}
    assert measured == {("rotary", 16), ("alibi", 16), ("alibi", 32)}

    backend = keras.config.backend()
    run = {
        "machine": report.machine(),
        "date": report.today(),
        "quick": True,
        "backends": {backend: {"versions": speed.backend_versions(), "parts": results}},
    }
    assert "rotary is timed up to L=16: a cap for this test." in report.markdown(run)

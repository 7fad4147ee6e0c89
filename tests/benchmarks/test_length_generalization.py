"""Smoke test of benchmarks/length_generalization.py in its quick setting."""

import importlib.util
import json
import pathlib

import keras
import numpy as np
import pytest

SCRIPT = (
    pathlib.Path(__file__).resolve().parents[2]
    / "benchmarks"
    / "length_generalization.py"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="the benchmark runs in the JAX pass only (one backend is enough)",
    ),
]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("length_generalization", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_every_scheme_task_and_bucket(tmp_path):
    benchmark = load_benchmark()
    benchmark.main(["--quick", "--output-dir", str(tmp_path)])

    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"length_generalization.{suffix}").stat().st_size > 0
    report = json.loads((tmp_path / "length_generalization.json").read_text())
    buckets = [benchmark.bucket_name(b) for b in benchmark.QUICK["buckets"]]
    table_length = report["settings"]["learned_table_length"]
    assert report["machine"]["backend"] == "jax"
    assert set(report["results"]) == set(benchmark.QUICK["tasks"])
    assert len(benchmark.SCHEMES) == 12 + 9 + 3
    for task, task_results in report["results"].items():
        assert set(task_results) == set(benchmark.SCHEMES)
        for scheme, entry in task_results.items():
            assert set(entry["summary"]) == set(buckets)
            for seed, curve in entry["curve"].items():
                # Validation every `eval_every` steps up to the cap (or the fit).
                assert [point[0] for point in curve] == list(
                    range(2, entry["steps"][seed] + 1, 2)
                )
                assert all(0.0 <= point[1] <= 1.0 for point in curve)
                fitted = entry["steps_to_fit"][seed] is not None
                assert fitted == (curve[-1][1] >= benchmark.QUICK["stop_at"])
            assert set(entry["fits"]) == {"0"}
            for bucket in buckets:
                summary = entry["summary"][bucket]
                beyond_table = scheme == "learned" and bucket != buckets[0]
                if beyond_table:
                    assert summary == {
                        "not_applicable": f"n/a (table of {table_length} positions)"
                    }
                    continue
                for key in ("mean", "std", "min", "max"):
                    assert 0.0 <= summary[key] <= 1.0, (task, scheme, bucket)
                for accuracies in entry["seeds"].values():
                    assert 0.0 <= accuracies[bucket] <= 1.0
    table = (tmp_path / "length_generalization.md").read_text()
    assert f"n/a (table of {table_length} positions)" in table
    for scheme in benchmark.SCHEMES:
        assert f"`{scheme}`" in table


def test_rotary_copy_with_other_scaling_keeps_the_weights():
    benchmark = load_benchmark()
    settings = {**benchmark.QUICK, "max_steps": 1}
    model, _ = benchmark.train_model("copy", "rotary", 0, settings)
    inputs, _, _ = benchmark.evaluation_sets("copy", settings)[1]
    copy = benchmark.rotary_model_with_scaling(model, None, 1.0, None)
    np.testing.assert_allclose(
        np.asarray(copy.predict_on_batch(inputs)),
        np.asarray(model.predict_on_batch(inputs)),
        atol=1e-5,
    )
    # Dynamic NTK equals plain rotary up to the original length and differs
    # beyond it.
    original_length = inputs.shape[1] - 1
    scaled = benchmark.rotary_model_with_scaling(
        model, "dynamic_ntk", 3.0, original_length
    )
    short, long = inputs[:, :original_length], inputs
    np.testing.assert_allclose(
        np.asarray(scaled.predict_on_batch(short)),
        np.asarray(model.predict_on_batch(short)),
        atol=1e-5,
    )
    assert not np.allclose(
        np.asarray(scaled.predict_on_batch(long)),
        np.asarray(model.predict_on_batch(long)),
        atol=1e-5,
    )

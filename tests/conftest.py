import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite compiles hundreds of tiny XLA programs (JAX's jit, TensorFlow's
# jit_compile), where LLVM's optimization passes cost more than they save:
# measured on JAX, 136 s -> 114 s for the block and attention tests.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.hardening import counts  # noqa: E402

# Run from an installed wheel by tests/wheel/test_wheel.py; importing it from
# the checkout (as `--doctest-modules` in the JAX pass would) fails by design.
collect_ignore = ["wheel/smoke.py"]


@pytest.fixture(scope="session", autouse=True)
def _frozen_imports():
    """Keeps what exists before the first test out of every later collection.

    `keras.backend.clear_session()` runs `gc.collect()` after each test; with
    TensorFlow, JAX, PyTorch and keras-hub imported, a full collection took
    100-220 ms (measured), about as long as a small test.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the float32 policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1337)
    np.random.seed(1337)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()} (keras {keras.__version__})"


# The hardening counts (bad inputs tried, property examples run, ...) travel in
# the test reports' `user_properties`, so that the summary also has them when
# pytest-xdist runs the tests in worker processes. These hooks live here, not in
# tests/hardening/, because the xdist controller loads only this conftest.


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "teardown":
        # Module-scoped fixtures record during the setup of their first test:
        # everything recorded up to this teardown belongs to this test's report.
        report.user_properties.extend(counts.take_pending())
    return report


def pytest_runtest_logreport(report):
    counts.add_report(report.user_properties)


def pytest_terminal_summary(terminalreporter):
    if not counts.TOTALS:
        return
    terminalreporter.section("hardening counts")
    for name, number in sorted(counts.TOTALS.items()):
        terminalreporter.write_line(f"{name}: {number}")

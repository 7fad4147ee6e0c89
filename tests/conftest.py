import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.hardening import counts  # noqa: E402


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

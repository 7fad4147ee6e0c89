from tests.hardening.counts import COUNTS


def pytest_terminal_summary(terminalreporter):
    if not COUNTS:
        return
    terminalreporter.section("hardening counts")
    for name, number in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{name}: {number}")

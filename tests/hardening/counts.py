"""Counts the hardening tests report at the end of a run (see tests/conftest.py).

A test calls `record()`; tests/conftest.py moves what a test recorded into its
report's `user_properties`, so that the counts also reach the terminal summary
when `pytest-xdist` runs the tests in worker processes.
"""

import collections

# What tests of this process recorded and tests/conftest.py has not yet reported.
PENDING = collections.Counter()
# What the reports of this run carried: the figures the summary prints.
TOTALS = collections.Counter()
PROPERTY_PREFIX = "hardening count: "


def record(name, number):
    """Adds `number` to the count called `name`."""
    PENDING[name] += number


def take_pending():
    """`user_properties` entries for the counts recorded since the last call."""
    entries = [(PROPERTY_PREFIX + name, number) for name, number in PENDING.items()]
    PENDING.clear()
    return entries


def add_report(user_properties):
    """Adds the counts a test report carries to `TOTALS`."""
    for key, value in user_properties:
        if isinstance(key, str) and key.startswith(PROPERTY_PREFIX):
            TOTALS[key[len(PROPERTY_PREFIX) :]] += value

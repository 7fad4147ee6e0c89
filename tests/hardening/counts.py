"""Counts the hardening tests report at the end of a run (printed by conftest.py)."""

import collections

COUNTS = collections.Counter()


def record(name, number):
    """Adds `number` to the count called `name`."""
    COUNTS[name] += number

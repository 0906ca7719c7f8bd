"""Figures of the hardening suites, written by the tests themselves.

Each suite (test_fuzz, test_crash_safety, test_faults, test_lab_holes) counts what it
tried and calls `record(section, figures)` when its module ends; everything lands in
tests/artifacts/reliability.json, which docs/RELIABILITY.md quotes. Sections of suites
that did not run keep their previous figures (with their own timestamp).
"""

import collections
import fcntl
import json
import os
import time

from tests import support

ARTIFACT = os.path.join(support.REPO, "tests", "artifacts", "reliability.json")


class Tally:
    """Named counters plus a list of notable findings, for one suite."""

    def __init__(self):
        self.counts = collections.Counter()
        self.notes = []

    def add(self, name, n=1):
        self.counts[name] += n

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)

    def figures(self):
        return {"counts": dict(sorted(self.counts.items())), "notes": list(self.notes)}


def record(section, figures):
    """Merge one suite's figures into the artifact (several pytest processes may race)."""
    os.makedirs(os.path.dirname(ARTIFACT), exist_ok=True)
    with open(ARTIFACT + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(ARTIFACT) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {}
        data[section] = dict(figures, recorded=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             ci=support.in_ci())
        tmp = ARTIFACT + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, ARTIFACT)

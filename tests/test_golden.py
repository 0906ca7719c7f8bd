"""Golden tests: the complete generated output of every case, compared byte for byte.

Run `make golden` (pytest --update-goldens) after an intended change and review the diff.
"""

import difflib
import os

import pytest

from tests.golden_cases import case_names, expected_path, render_case


@pytest.mark.parametrize("case", case_names())
def test_golden(case, update_goldens):
    produced = render_case(case)
    failures = []
    for artifact, text in sorted(produced.items()):
        path = expected_path(case, artifact)
        if update_goldens:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            continue
        assert os.path.exists(path), "missing golden %s (run make golden)" % path
        with open(path) as f:
            want = f.read()
        if want != text:
            diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), path, "produced"))
            failures.append(diff)
    assert not failures, "\n".join(failures)


def test_render_is_deterministic():
    for case in case_names():
        assert render_case(case) == render_case(case)

"""build123d with sklearn deferred: nothing of sklearn is imported until detect_primitives needs
DBSCAN, and then exactly the real module is; a design importing sklearn gets the real one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROBE = """
import json, sys
from worker.simulation.imports import defer_unused_imports
defer_unused_imports()
import build123d
from build123d import brep_from_stl
got = {
    "sklearn": "sklearn" in sys.modules,
    "scipy.stats": "scipy.stats" in sys.modules,
    "stand-in": repr(brep_from_stl.DBSCAN),
    "loader": type(build123d.__spec__.loader).__name__ + "/" + type(build123d.__loader__).__name__,
    "finders": [type(f).__name__ for f in sys.meta_path],
}
if sys.argv[1] == "use":
    import numpy as np
    points = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    labels = brep_from_stl.DBSCAN(eps=0.5, min_samples=2).fit(points).labels_.tolist()
    import sklearn.cluster
    got.update(labels=labels, real=brep_from_stl.DBSCAN is sklearn.cluster.DBSCAN)
else:
    import sklearn.cluster  # a design's own import: the real module, not a stand-in
    got.update(real=sklearn.cluster.__file__ is not None and hasattr(sklearn.cluster, "KMeans"))
print(json.dumps(got))
"""


def run(mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_build123d_imports_without_sklearn_and_its_loader_is_its_own() -> None:
    got = run("use")
    assert got["sklearn"] is False and got["scipy.stats"] is False
    assert got["stand-in"] == "<deferred sklearn.cluster.DBSCAN>"
    assert got["loader"] == "SourceFileLoader/SourceFileLoader"
    assert "_Finder" not in got["finders"]  # removed once build123d was found


def test_the_first_use_runs_the_real_dbscan_and_puts_it_in_place() -> None:
    got = run("use")
    assert got["labels"] == [0, 0, 1, 1]
    assert got["real"] is True


def test_a_design_that_imports_sklearn_gets_the_real_module() -> None:
    assert run("import")["real"] is True

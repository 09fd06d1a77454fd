"""plots.svg: a valid standalone SVG, a panel per quantity, the decision marked, labels escaped,
the same bytes for the same series."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from worker.simulation.plots import nice_ticks, plots_svg
from worker.simulation.series import Column, Series

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>x</script>&\"'"  # short enough to show whole in a legend


def series(speed_labels: list[str], actuators: tuple[str, ...] = ()) -> Series:
    cols = [Column("goal", "distance to goal", "last"), Column("hold", "hold in goal", "last")]
    cols += [Column("speed", s, "max") for s in speed_labels]
    cols += [Column("force", "largest contact force", "max")]
    cols += [Column("energy", n, "last") for n in ("kinetic", "potential", "total")]
    cols += [Column("effort", a, "max") for a in actuators]
    t = np.linspace(0, 2, 50)
    values = np.column_stack([np.sin(t * (j + 1)) + j for j in range(len(cols))])
    values[10, 0] = np.nan  # a gap breaks the line, it does not break the document
    return Series(tuple(cols), t, values, goal_hold_s=1.0)


def test_every_panel_is_drawn_and_the_decision_marked() -> None:
    svg = plots_svg(series(["a", "b"], ("arm",)), (1.25, "FORBID_ZONE_HIT"))
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    texts = [t.text or "" for t in root.iter(f"{NS}text")]
    for title in (
        "Target's distance to the goal (mm)",
        "Target's time held in the goal (s)",
        "Part speeds (mm/s)",
        "Largest contact force (N)",
        "Energy (J)",
        "Actuator effort (% of its force limit)",
    ):
        assert title in texts
    assert texts.count("FORBID_ZONE_HIT at 1.25 s") == 6
    assert "needed: 1 s" in texts and "force limit" in texts
    # 9 lines, one broken in two by the NaN.
    assert len(list(root.iter(f"{NS}polyline"))) == 2 + 2 + 1 + 3 + 1 + 1


def test_labels_are_escaped_and_many_parts_are_cut_to_the_strongest() -> None:
    labels = [f"p{i}" for i in range(11)] + [HOSTILE]  # the last column has the largest peak
    svg = plots_svg(series(labels), None)
    root = ET.fromstring(svg)  # well-formed despite the label
    assert not list(root.iter(f"{NS}script"))
    texts = [t.text or "" for t in root.iter(f"{NS}text")]
    assert HOSTILE in texts  # escaped in the document, the same text once parsed
    assert "+4 more with lower peaks not shown" in texts
    assert "p10" in texts and "p4" in texts and "p3" not in texts


def test_same_series_same_bytes() -> None:
    assert plots_svg(series(["a"]), (0.5, "SUCCESS")) == plots_svg(series(["a"]), (0.5, "SUCCESS"))


def test_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 10, target=6) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 0.7) == [0, 0.2, 0.4, 0.6, 0.8]
    for lo, hi in ((0, 1), (0, 7.3), (-3, 1e6), (0.001, 0.002), (5, 5)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= min(hi, ticks[-1])
        assert 2 <= len(ticks) <= 12

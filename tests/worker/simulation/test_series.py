"""Series decimation: bounded rows, the first sample kept, peaks kept, levels as they end."""

from __future__ import annotations

import numpy as np
import pytest

from worker.simulation.series import Column, Decimator

COLS = (Column("force", "peak", "max"), Column("energy", "level", "last"))


def test_rows_are_bounded_and_keep_the_start_the_peaks_and_the_end() -> None:
    dec = Decimator(COLS, expected_rows=10_000, max_points=100)
    spike_at = 4321
    for i in range(10_000):
        peak = 1000.0 if i == spike_at else 1.0
        dec.add(i * 0.01, np.array([peak, float(i)]))
    t, rows = dec.rows()
    assert len(t) == len(rows) <= 102
    assert t[0] == 0.0 and rows[0].tolist() == [1.0, 0.0]  # the first sample as it is
    assert rows[:, 0].max() == 1000.0  # a one-sample spike survives a 100× decimation
    assert t[-1] == pytest.approx(99.99) and rows[-1, 1] == 9999.0  # a level: its last value
    assert np.all(np.diff(t) > 0)


def test_a_nan_sample_does_not_erase_a_peak() -> None:
    dec = Decimator(COLS, expected_rows=4, max_points=2)
    for v in (5.0, float("nan"), 1.0, 2.0):
        dec.add(0.0, np.array([v, v]))
    _, rows = dec.rows()
    assert rows[:, 0].max() == 5.0


def test_more_rows_than_expected_are_dropped_not_grown() -> None:
    dec = Decimator(COLS, expected_rows=10, max_points=10)
    for i in range(1000):
        dec.add(float(i), np.array([1.0, 1.0]))
    t, _ = dec.rows()
    assert len(t) == 12

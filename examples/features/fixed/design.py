"""Fixed and free parts.

A part is free by default: it has all six degrees of freedom and falls, slides and tumbles. A part
with `fixed: True` is welded to the world where it was built and never moves, even in mid-air.
(A part is either fixed or jointed, never both.)

A fixed shelf hangs in the air, 100 mm up; one free block rests on it and stays there, another
starts beside it and falls to the floor.
"""

from build123d import Box, Pos

PARTS = {
    "shelf": {"fixed": True},
    # "on_shelf" and "falling" are not listed: free.
}


def build():
    shelf = Pos(0, 0, 95) * Box(120, 120, 10)  # top face at z = 100
    shelf.label = "shelf"
    shelf.material = "oak"
    on_shelf = Pos(0, 0, 120) * Box(40, 40, 40)  # resting on the shelf's top face
    on_shelf.label = "on_shelf"
    falling = Pos(150, 0, 120) * Box(40, 40, 40)  # beside the shelf: nothing holds it up
    falling.label = "falling"
    return [shelf, on_shelf, falling]

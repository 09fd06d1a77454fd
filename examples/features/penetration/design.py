"""Start-up interpenetration: parts must not overlap when the run starts.

Two free blocks built 5 mm into each other would be shot apart by the contact solver, so the run
fails at t = 0 with INITIAL_PENETRATION. Up to 0.5 mm of overlap is tolerated (touching faces
tessellate slightly into each other). A part jointed or welded to another part never collides
with that parent, so those two may overlap, e.g. an axle inside its bearing.
"""

from build123d import Box, Pos


def build():
    left = Pos(0, 0, 20) * Box(40, 40, 40)
    left.label = "left"
    right = Pos(35, 0, 20) * Box(40, 40, 40)  # x from 15 to 55: 5 mm inside `left`
    right.label = "right"
    return [left, right]

"""Task fixtures: a fixed ramp inclined at 15° and a wall that stops what rolls down it.

The environment runs in its own build child, so the design cannot change it.
"""

from build123d import Box, Pos, Rot

PARTS = {
    "ramp": {"fixed": True},
    "wall": {"fixed": True},
}


def build():
    # A 400 × 120 × 10 mm plank turned 15° about y; its low end rests on the floor at x ≈ 190.
    ramp = Pos(0, 0, 55) * Rot(0, 15, 0) * Box(400, 120, 10)
    ramp.label = "ramp"
    ramp.material = "pine"
    wall = Pos(520, 0, 40) * Box(20, 200, 80)
    wall.label = "wall"
    return [ramp, wall]

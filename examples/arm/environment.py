"""Task fixtures: a fixed pedestal to mount an arm on, and a free 40 mm block on the floor.

The block must end up in the goal zone (see objectives.yaml), a quarter turn around the pedestal
from where it starts. The environment runs in its own build child, so the design cannot change it.
"""

from build123d import Box, Cylinder, Pos

PARTS = {
    "pedestal": {"fixed": True},
    # The block is free (the default): it falls, slides and tips under gravity and contacts.
}


def build():
    # A 50 mm wide, 40 mm tall post standing on the floor at the origin.
    pedestal = Pos(0, 0, 20) * Cylinder(25, 40)
    pedestal.label = "pedestal"
    pedestal.material = "mild_steel"
    # A 40 mm PLA cube (79 g) resting on the floor, 170 mm out along x, 4 mm to the
    # left of where the arm's paddle hangs.
    block = Pos(170, 32, 20) * Box(40, 40, 40)
    block.label = "block"
    block.material = "pla"  # sets a white colour too; set `color` after it to override
    block.color = (0.9, 0.45, 0.15)
    return [pedestal, block]

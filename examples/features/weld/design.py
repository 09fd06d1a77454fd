"""Weld joints: rigidly attach a part to the world or to another part.

A part welded to the world stays where it was built (like `fixed: True`). A part welded to another
part moves with it as one rigid body, keeping its offset and orientation relative to it, while
remaining a part of its own: its own label, colour, material and metrics. Welds take no axis,
anchor, range or actuator.

A pine beam is hinged to the world at its left end and swings down; a brass weight welded to its
right end swings with it, keeping its place on the beam. A sign welded to the world floats in the
air above, untouched by gravity.
"""

from build123d import Box, Pos

PARTS = {
    "beam": {
        "joint": {
            "type": "hinge",
            "axis": (0, 1, 0),
            "anchor": (0, 0, 300),
            "damping": 0.1,
        },
    },
    "weight": {"joint": {"type": "weld", "parent": "beam"}},
    "sign": {"joint": {"type": "weld", "parent": "world"}},
}


def build():
    beam = Pos(100, 0, 300) * Box(200, 20, 10)  # from x = 0 to x = 200
    beam.label = "beam"
    beam.material = "pine"
    weight = Pos(215, 0, 300) * Box(30, 30, 30)  # against the beam's right end
    weight.label = "weight"
    weight.material = "brass"
    sign = Pos(100, 0, 450) * Box(120, 10, 60)
    sign.label = "sign"
    sign.color = (0.85, 0.75, 0.2)
    return [beam, weight, sign]

"""Hinge joints, to the world and to another part: a double pendulum.

A hinge turns a part about `axis` (a world direction) through `anchor` (a point in world mm at
t = 0; default: the part's centre of mass). `parent` is "world" or another part's label; a part
hinged to another part turns relative to it and is carried along by it. `damping` is in N·m·s/rad
and `range` (optional) in degrees from the pose it was built in.

Two aluminium bars, built horizontal along +x, 400 mm up. `upper` is hinged to the world at its
left end, `lower` to the right end of `upper`; both axes are +y. Released, they swing down (a
positive turn about +y takes +x towards -z) and the damping lets them come to rest hanging.
"""

from build123d import Box, Pos

PARTS = {
    "upper": {
        "joint": {
            "type": "hinge",
            "parent": "world",
            "axis": (0, 1, 0),
            "anchor": (0, 0, 400),
            "damping": 0.08,
        },
    },
    "lower": {
        "joint": {
            "type": "hinge",
            "parent": "upper",  # turns relative to `upper`, about the joint between the two
            "axis": (0, 1, 0),
            "anchor": (200, 0, 400),
            "damping": 0.03,
        },
    },
}


def build():
    upper = Pos(100, 0, 400) * Box(200, 20, 20)  # from x = 0 to x = 200
    upper.label = "upper"
    upper.material = "aluminum"
    upper.color = (0.2, 0.5, 0.85)
    lower = Pos(275, 0, 400) * Box(150, 20, 20)  # from x = 200 to x = 350
    lower.label = "lower"
    lower.material = "aluminum"
    lower.color = (0.9, 0.45, 0.15)
    return [upper, lower]

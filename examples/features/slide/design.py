"""Slide joints, to the world and to another part, with travel limits.

A slide moves a part along `axis` (a world direction at t = 0, need not be a unit vector) without
turning it. `range` limits the travel in millimetres from the pose it was built in; `damping` is in
N per mm/s. `parent` is "world" or another part's label: a part on a slide to another part moves along
the axis relative to that part and is carried along by it.

A carriage on a sloping rail (a slide to the world, pointing down the slope) rolls down under its
own weight until it reaches the end of its 150 mm travel. A rider on a vertical slide to the
carriage drops 40 mm, to the end of its own travel, and rides along.
"""

from build123d import Box, Pos

PARTS = {
    "carriage": {
        "joint": {
            "type": "slide",
            "parent": "world",
            "axis": (2, 0, -1),  # down a 1-in-2 slope, towards +x
            "range": (0, 150),  # mm along the axis: it may only go down the slope, 150 mm
            "damping": 0.002,  # N per mm/s
        },
    },
    "rider": {
        "joint": {
            "type": "slide",
            "parent": "carriage",
            "axis": (0, 0, 1),
            "range": (-40, 0),  # may drop 40 mm below where it was built
        },
    },
}


def build():
    carriage = Pos(0, 0, 200) * Box(80, 40, 20)
    carriage.label = "carriage"
    carriage.material = "aluminum"
    carriage.color = (0.2, 0.5, 0.85)
    rider = Pos(0, 0, 230) * Box(30, 30, 30)  # 5 mm above the carriage
    rider.label = "rider"
    rider.material = "brass"
    return [carriage, rider]

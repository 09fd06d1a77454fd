"""A sweeping arm mounted on the pedestal (see environment.py), turned by a position servo.

The arm turns about the vertical axis through the pedestal. Its paddle hangs down to the floor
and, when the servo is commanded to turn 100° (options.yaml), sweeps the block a quarter turn
around the pedestal into the goal zone.

The arm is one part made of three box solids (hub, beam, paddle). Each solid collides as its own
convex hull, so the L-shaped arm keeps its shape in contacts; one fused L-shaped solid would
collide as a filled triangle-like hull and hit the block with its beam.
"""

from build123d import Box, Compound, Pos

PARTS = {
    "arm": {
        "joint": {
            "type": "hinge",
            # Hinged to the world. Such a part collides with fixed parts, so the arm clears the
            # pedestal by 1 mm; with "parent": "pedestal" the two would never collide.
            "parent": "world",
            "axis": (0, 0, 1),  # a vertical axis ...
            "anchor": (0, 0, 0),  # ... through the pedestal's centre
            "range": (-10, 120),  # degrees
            "damping": 1.5,  # N·m·s/rad: overdamped, so it pushes the block and never strikes it
            "actuator": {
                "kind": "position",  # servo to the commanded angle (radians)
                "kp": 1.5,  # N·m per radian of error
                "force_limit": 3.0,  # N·m; the step asks for at most 1.5 × 1.75 = 2.6
            },
        },
        "density": 1240,  # PLA, kg/m³ (the same as material "pla")
    },
}


def build():
    # 1 mm above the 40 mm pedestal, so the arm never rubs on it.
    hub = Pos(0, 0, 51) * Box(40, 40, 20)
    beam = Pos(125, 0, 51) * Box(210, 16, 20)  # from the hub (x = 20) out to x = 230
    # The paddle hangs under the beam's outer half (x = 120 to 230), 5 mm off the floor.
    paddle = Pos(175, 0, 23) * Box(110, 16, 36)
    arm = Compound([hub, beam, paddle])  # one part (one leaf) with three convex solids
    arm.label = "arm"
    arm.color = (0.2, 0.5, 0.85)
    return arm

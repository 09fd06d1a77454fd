"""Motor overload: an actuator too weak for its load.

A position servo is told to hold a 200 mm steel bar level (options.yaml: constant 0 rad). The
bar's weight needs 0.61 N·m at the hinge, but the servo's force_limit is 0.3 N·m: the servo
saturates, the bar sags, and after `overload_s` (0.5 s) at the limit the run fails with
MOTOR_OVERLOAD. With force_limit 1.0 the same servo holds the bar (sagging 0.61 / kp = 0.12 rad).
"""

from build123d import Box, Pos

PARTS = {
    "bar": {
        "joint": {
            "type": "hinge",
            "axis": (0, 1, 0),
            "anchor": (0, 0, 300),
            "damping": 0.2,
            "actuator": {"kind": "position", "kp": 5.0, "force_limit": 0.3, "overload_s": 0.5},
        },
    },
}


def build():
    bar = Pos(100, 0, 300) * Box(200, 20, 20)  # 0.624 kg, its centre of mass 100 mm out
    bar.label = "bar"
    bar.material = "mild_steel"
    return bar

"""Actuators: motor, position servo and velocity servo, driven by SimOptions.controls.

An actuator drives the joint of the part it belongs to (a hinge or a slide; a weld has none) and is
named after that part: a control `{actuator: pushed, ...}` drives part "pushed". Units follow the
joint: radians and N·m on a hinge, millimetres and newtons on a slide.
  motor     the control is the force (torque) itself, in N (N·m).
  position  servo to the control, a position (mm or rad), with stiffness `kp` (N/mm or N·m/rad).
  velocity  servo to the control, a speed (mm/s or rad/s), with gain `kv` (N per mm/s or
            N·m per rad/s).
`ctrl_range` clamps the control (same units), `force_limit` clamps the actuator's force (N or N·m),
and an actuator held at its force limit for more than `overload_s` seconds in a row fails the run
with MOTOR_OVERLOAD. A position servo has no damping of its own: give its joint some.

Three 40 mm aluminium blocks (0.1728 kg) on parallel slides along x, in mid-air so that nothing but
the actuator pushes them (options.yaml holds the controls):
  pushed   motor, constant 0.01 N        → x = F t² / 2m = 115.7 mm after 2 s
  servo    position, step 0 → 80 mm at 0.5 s → settles at 80 mm
  cruiser  velocity, 40 + 40·sin(2π·1 Hz·t) mm/s → 80 mm after 2 s (two whole periods)
"""

from build123d import Box, Pos

PARTS = {
    "pushed": {
        "joint": {
            "type": "slide",
            "axis": (1, 0, 0),
            "actuator": {"kind": "motor", "force_limit": 1.0},
        },
    },
    "servo": {
        "joint": {
            "type": "slide",
            "axis": (1, 0, 0),
            "damping": 0.006,  # N per mm/s: about critical for kp = 0.05 N/mm and 0.17 kg
            "actuator": {
                "kind": "position",
                "kp": 0.05,  # N per mm of error
                "ctrl_range": (0, 100),  # mm
                "force_limit": 10.0,
            },
        },
    },
    "cruiser": {
        "joint": {
            "type": "slide",
            "axis": (1, 0, 0),
            "actuator": {"kind": "velocity", "kv": 0.01, "force_limit": 5.0},  # N per mm/s
        },
    },
}


def build():
    parts = []
    for y, label, color in (
        (-100, "pushed", (0.9, 0.45, 0.15)),
        (0, "servo", (0.2, 0.5, 0.85)),
        (100, "cruiser", (0.3, 0.7, 0.35)),
    ):
        block = Pos(0, y, 100) * Box(40, 40, 40)
        block.label = label
        block.material = "aluminum"
        block.color = color
        parts.append(block)
    return parts

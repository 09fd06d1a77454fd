"""A driven gear pair on hinges (PARTS): the pinion turns the wheel."""
from bd_warehouse.gear import SpurGear
from build123d import *
from ocp_vscode import show

A = 2 * (20 + 30) / 2 + 0.3
PARTS = {
    "pinion": {"joint": {"type": "hinge", "axis": (0, 0, 1), "anchor": (0, 0, 100),
                         "damping": 0.001,
                         "actuator": {"kind": "velocity", "kv": 0.05, "force_limit": 5}}},
    "wheel": {"joint": {"type": "hinge", "axis": (0, 0, 1), "anchor": (A, 0, 100),
                        "damping": 0.001}},
}
pinion = Pos(0, 0, 100) * SpurGear(module=2, tooth_count=20, pressure_angle=20,
                                   root_fillet=0.5, thickness=10)
wheel = Pos(A, 0, 100) * Rot(0, 0, 6) * SpurGear(module=2, tooth_count=30, pressure_angle=20,
                                                 root_fillet=0.5, thickness=10)
pinion.label, wheel.label = "pinion", "wheel"
show(pinion, wheel)

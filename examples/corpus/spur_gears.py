"""Two bd_warehouse spur gears in mesh, lying on the floor."""
from bd_warehouse.gear import SpurGear
from build123d import *
from ocp_vscode import show

pinion = SpurGear(module=2, tooth_count=16, pressure_angle=20, thickness=8)
wheel = SpurGear(module=2, tooth_count=32, pressure_angle=20, thickness=8)
centre = 2 * (16 + 32) / 2 + 0.3  # 0.3 mm of backlash
pinion = Pos(0, 0, 4) * pinion
wheel = Pos(centre, 0, 4) * Rot(0, 0, 180 / 32) * wheel
pinion.label, wheel.label = "pinion", "wheel"
show(pinion, wheel)

"""A capsule-shaped pill lying on the floor: it collides as a capsule."""
from build123d import *
from ocp_vscode import show

pill = Cylinder(4, 12) + Pos(0, 0, 6) * Sphere(4) + Pos(0, 0, -6) * Sphere(4)
pill = Pos(0, 0, 4.1) * Rot(0, 90, 0) * pill
pill.label = "pill"
show(pill)

"""A ball on a fixed 10° ramp: it rolls as a ball, (5/7) g sin θ."""
from build123d import *
from ocp_vscode import show

PARTS = {"ramp": {"fixed": True}}
frame = Pos(0, 0, 100) * Rot(0, 10, 0)
ramp = frame * Box(600, 200, 10)
ball = frame * Pos(-250, 0, 5 + 15.2) * Sphere(15)
ramp.label, ball.label = "ramp", "ball"
show(ramp, ball)

"""A pillow block with a through-hole on two feet, and a 6 mm ball dropped over the hole."""
from build123d import *
from ocp_vscode import show

PARTS = {"block": {"fixed": True}}
with BuildPart() as block:
    Box(60, 30, 20)
    Hole(8)
    with Locations((-25, 0, -15), (25, 0, -15)):
        Box(10, 30, 10)
block = Pos(0, 0, 20.05) * block.part
ball = Pos(0, 0, 45) * Sphere(3)
block.label, ball.label = "block", "ball"
show(block, ball)

"""A one-piece cup and a steel ball dropped into it: the ball rests on the cup's inner floor."""
from build123d import *
from ocp_vscode import show

cup = Pos(0, 0, 30) * (Cylinder(40, 60) - Pos(0, 0, 4) * Cylinder(36, 60))
cup.label = "cup"
ball = Pos(0, 0, 90) * Sphere(10)
ball.label = "ball"
ball.material = "mild_steel"
show(cup, ball)

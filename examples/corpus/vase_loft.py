"""A lofted, shelled vase: thin curved walls (its mesh is a few % off its CAD volume)."""
from build123d import *
from ocp_vscode import show

with BuildPart() as vase:
    with BuildSketch():
        Circle(30)
    with BuildSketch(Plane.XY.offset(60)):
        Circle(45)
    with BuildSketch(Plane.XY.offset(120)):
        Circle(20)
    loft()
    offset(amount=-1.5, openings=vase.faces().sort_by(Axis.Z)[-1])
show(vase, names=["vase"])

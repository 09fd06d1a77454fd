"""A tea cup with a handle, thin walls (shell), standing on the floor."""
from build123d import *
from ocp_vscode import show

with BuildPart() as cup:
    Cylinder(35, 70, align=(Align.CENTER, Align.CENTER, Align.MIN))
    offset(amount=-2.5, openings=cup.faces().sort_by(Axis.Z)[-1])
    with Locations((37, 0, 35)):
        Torus(14, 3.5, rotation=(90, 0, 0))

show(cup, names=["tea_cup"])

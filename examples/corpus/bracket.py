"""An L bracket with two mounting holes, lifted onto the floor."""
from build123d import *
from ocp_vscode import show_object, set_port

set_port(3939)

with BuildPart() as bracket:
    with BuildSketch(Plane.XZ):
        with BuildLine():
            Polyline((0, 0), (60, 0), (60, 5), (5, 5), (5, 40), (0, 40), close=True)
        make_face()
    extrude(amount=30)
    with Locations(bracket.faces().sort_by(Axis.Z)[0]):
        with GridLocations(30, 0, 2, 1):
            Hole(3)

bracket.part.label = "bracket"
show_object(Pos(-30, 15, 0) * bracket.part, name="bracket")

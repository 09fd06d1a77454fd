"""show() of a builder, named through `names=`, with a sketch that has no solid (left out, and
listed in the result's warnings)."""
from build123d import *
from ocp_vscode import show, set_defaults, Camera

set_defaults(reset_camera=Camera.RESET)
with BuildPart() as knob:
    Cylinder(15, 10, align=(Align.CENTER, Align.CENTER, Align.MIN))
    fillet(knob.edges().group_by(Axis.Z)[-1], radius=2)
with BuildSketch() as outline:
    Rectangle(50, 50)
show(knob, outline, names=["knob", "outline"])

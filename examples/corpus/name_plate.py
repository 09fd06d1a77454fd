"""A name plate with bold raised text (needs fonts in the build jail)."""
from build123d import *
from ocp_vscode import show

with BuildPart() as plate:
    Box(80, 30, 4, align=(Align.CENTER, Align.CENTER, Align.MIN))
    with BuildSketch(plate.faces().sort_by(Axis.Z)[-1]):
        Text("SIMJAIL", 10, font_style=FontStyle.BOLD)
    extrude(amount=1.5)
show(plate, names=["plate"])

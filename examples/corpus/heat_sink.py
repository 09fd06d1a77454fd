"""A finned heat sink (one prism with 12 fins) resting on the floor."""
from build123d import *
from ocp_vscode import show

with BuildPart() as sink:
    Box(60, 40, 5, align=(Align.CENTER, Align.CENTER, Align.MIN))
    with GridLocations(5, 0, 12, 1):
        Box(1.5, 40, 25, align=(Align.CENTER, Align.CENTER, Align.MIN))
show(sink, names=["heat_sink"])

"""A slide latch: a bolt in a U-shaped keeper with 0.25 mm clearance on each side."""
from build123d import *
from ocp_vscode import show

PARTS = {"keeper": {"fixed": True},
         "bolt": {"joint": {"type": "slide", "axis": (1, 0, 0), "range": (-10, 10)}}}
with BuildPart() as keeper:
    Box(40, 30, 20, align=(Align.CENTER, Align.CENTER, Align.MIN))
    with Locations((0, 0, 3)):
        Box(40, 10.5, 20, align=(Align.CENTER, Align.CENTER, Align.MIN), mode=Mode.SUBTRACT)
bolt = Pos(0, 0, 13.1) * Box(60, 10, 10, align=(Align.CENTER, Align.CENTER, Align.CENTER))
keeper.part.label, bolt.label = "keeper", "bolt"
show(keeper.part, bolt)

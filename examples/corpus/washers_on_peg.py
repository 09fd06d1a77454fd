"""Three rings dropped over a fixed peg: they slide down it and stack."""
from build123d import *
from ocp_vscode import show

PARTS = {"peg": {"fixed": True}}
peg = Pos(0, 0, 40) * Cylinder(5, 80)
rings = [Pos(0, 0, 60 + 12 * i) * (Cylinder(12, 4) - Cylinder(6, 4)) for i in range(3)]
peg.label = "peg"
for i, r in enumerate(rings):
    r.label = f"ring{i}"
show(peg, *rings)

"""`result` comes before what was shown (build() > result > shown objects)."""
from build123d import *
from ocp_vscode import show

shown = Pos(0, 0, 50) * Sphere(10)
result = Pos(0, 0, 10) * Box(20, 20, 20)
result.label = "chosen"
show(shown)

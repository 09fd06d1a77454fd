"""show_all(): every CAD object among the script's variables is the result."""
from build123d import *
from ocp_vscode import show_all

base = Pos(0, 0, 5) * Box(80, 80, 10)
tower = Pos(0, 0, 30.1) * Cylinder(10, 40)
_helper = Box(1, 1, 1)  # private names are not shown
show_all()

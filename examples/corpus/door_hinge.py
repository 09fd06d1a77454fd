"""A door leaf on a fixed post's vertical hinge: gravity has no torque about it, it stays."""
from build123d import *
from ocp_vscode import show

PARTS = {"post": {"fixed": True},
         "leaf": {"joint": {"type": "hinge", "parent": "post", "axis": (0, 0, 1),
                            "anchor": (0, 0, 150), "damping": 0.05}}}
post = Pos(0, 0, 100) * Cylinder(6, 200)
leaf = Pos(0, 0, 150) * Rot(0, 0, 30) * Pos(65, 0, 0) * Box(110, 4, 80)
post.label, leaf.label = "post", "leaf"
show(post, leaf)

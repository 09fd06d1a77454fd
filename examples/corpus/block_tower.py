"""Five 40 mm blocks, each 6 mm further out: statics says the tower stands."""
from build123d import *
from ocp_vscode import show

blocks = []
for i in range(5):
    b = Pos(6 * i, 0, 20 + 40 * i) * Box(40, 40, 40)
    b.label = f"block{i}"
    blocks.append(b)
show(*blocks)

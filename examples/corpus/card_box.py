"""A card box (open top) with its lid resting beside it and a card inside."""
from build123d import *
from ocp_vscode import show

with BuildPart() as box:
    Box(70, 95, 25, align=(Align.CENTER, Align.CENTER, Align.MIN))
    offset(amount=-2, openings=box.faces().sort_by(Axis.Z)[-1])
lid = Pos(90, 0, 1.5) * Box(74, 99, 3)
card = Pos(0, 0, 2.6) * Box(63, 88, 1)
box.part.label, lid.label, card.label = "box", "lid", "card"
show(box.part, lid, card)

"""A 60 mm block released 300 mm above the floor. It falls, lands and rests in the goal."""

from build123d import Box, Pos


def build():
    block = Pos(0, 0, 300) * Box(60, 60, 60)
    block.label = "block"
    block.material = "aluminum"  # build123d material: 2700 kg/m³
    return block

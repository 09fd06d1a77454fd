"""A block centred on the origin, as build123d makes it: half of it starts below the floor."""
from build123d import Box
from ocp_vscode import show

block = Box(40, 40, 20)
show(block)

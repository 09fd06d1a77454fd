"""bd_warehouse fasteners: a cap screw lying on its side, a nut and a washer on the floor."""
from bd_warehouse.fastener import HexNut, PlainWasher, SocketHeadCapScrew
from build123d import *
from ocp_vscode import show

screw = SocketHeadCapScrew("M6-1", 20, simple=True)
nut = HexNut("M6-1", simple=True)
washer = PlainWasher("M6", "iso7089")
screw = Pos(0, 0, 5.2) * Rot(0, 90, 0) * screw
nut = Pos(30, 0, 0.1) * nut
washer = Pos(50, 0, 0.1) * washer
screw.label, nut.label, washer.label = "screw", "nut", "washer"
show(screw, nut, washer)

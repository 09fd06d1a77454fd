"""Parts, labels and colours.

Every leaf of what build() returns is one part, placed where its global location puts it. A leaf's
`label` names the part (labels are unique across the design and the environment); a leaf without a
label gets a generated name, `part_<n>` in the design and `env_<n>` in the environment, where n is
the leaf's index in tree order. A leaf's `color` is its colour in the video; without one, parts are
coloured from a fixed palette.

Nothing here moves on its own: three free blocks resting on the floor. Without objectives, a run
that stays stable is SUCCESS.
"""

from build123d import Box, Color, Compound, Pos


def build():
    red = Pos(-80, 0, 20) * Box(40, 40, 40)
    red.label = "red_block"
    red.color = Color("red")  # any build123d Color: a name, RGB(A) floats, or a hex value
    blue = Pos(0, 0, 20) * Box(40, 40, 40)
    blue.label = "blue_block"
    blue.color = (0.1, 0.3, 0.9)  # a plain RGB tuple also works
    unnamed = Pos(80, 0, 20) * Box(40, 40, 40)  # no label: named "part_2", palette colour
    # An assembly (a Compound with children) is flattened: its leaves are the parts.
    return Compound(children=[red, blue, unnamed])

"""Collision shapes: every solid collides as its convex hull.

MuJoCo collides each solid of a part as the convex hull of its mesh (the video still shows the exact
mesh). A concave solid, such as a cup, therefore behaves as if its hollow were filled in. To get
faithful contacts, build a concave part from several convex solids: a part is one leaf, and a leaf
may hold many solids when it is a `Compound` of them (not their fused union, `a + b`, which makes
one solid again when they touch). Solids of one part may touch but should not overlap, or the
overlap is counted twice in the mass.

Two fixed cups with a steel ball above each. The cup made as one solid (a box with a box cut out)
collides as a closed box, and its ball comes to rest on top of the rim. The cup made of five box
solids (a base and four walls) catches its ball, which rests on the cup's floor.
"""

from build123d import Box, Compound, Pos, Sphere

PARTS = {
    "solid_cup": {"fixed": True},
    "split_cup": {"fixed": True},
}

SIZE, HEIGHT, WALL = 100.0, 60.0, 8.0


def build():
    # One concave solid: its convex hull is the whole 100 × 100 × 60 box.
    solid_cup = Pos(-100, 0, HEIGHT / 2) * Box(SIZE, SIZE, HEIGHT) - Pos(
        -100, 0, WALL + HEIGHT / 2
    ) * Box(SIZE - 2 * WALL, SIZE - 2 * WALL, HEIGHT)
    solid_cup.label = "solid_cup"

    # The same cup as five convex solids in one part.
    inner = SIZE - 2 * WALL
    wall_h = HEIGHT - WALL
    zc = WALL + wall_h / 2
    off = SIZE / 2 - WALL / 2
    split_cup = Pos(100, 0, 0) * Compound(
        [
            Pos(0, 0, WALL / 2) * Box(SIZE, SIZE, WALL),  # base
            Pos(0, off, zc) * Box(SIZE, WALL, wall_h),  # back wall (full width)
            Pos(0, -off, zc) * Box(SIZE, WALL, wall_h),  # front wall
            Pos(off, 0, zc) * Box(WALL, inner, wall_h),  # right wall, between the two
            Pos(-off, 0, zc) * Box(WALL, inner, wall_h),  # left wall
        ]
    )
    split_cup.label = "split_cup"

    balls = []
    for x, label in ((-100, "ball_in_solid_cup"), (100, "ball_in_split_cup")):
        ball = Pos(x, 0, 120) * Sphere(20)
        ball.label = label
        ball.material = "mild_steel"
        ball.color = (0.9, 0.45, 0.15)
        balls.append(ball)
    return [solid_cup, split_cup, *balls]

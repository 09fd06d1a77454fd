"""Collision shapes: a concave solid collides as its shape, automatically or split by hand.

A concave solid such as a cup is decomposed into convex pieces (README "Collision shapes"): this
one (a box with a box cut out, not a prism) by CoACD. A part may also be built from convex solids
by hand: a part is one leaf, and a leaf may hold many solids when it is a `Compound` of them (not
their fused union, `a + b`, which makes one solid again when they touch); each of these boxes
collides as MuJoCo's own box. Solids of one part may touch but should not overlap, or the overlap
is counted twice in the mass.

Two fixed cups with a steel ball above each: both catch their ball, which rests on the cup's
8 mm floor (the one-solid cup within CoACD's accuracy, a millimetre or two).
"""

from build123d import Box, Compound, Pos, Sphere

PARTS = {
    "solid_cup": {"fixed": True},
    "split_cup": {"fixed": True},
}

SIZE, HEIGHT, WALL = 100.0, 60.0, 8.0


def build():
    # One concave solid: decomposed into convex pieces automatically (its hull would be the
    # whole 100 × 100 × 60 box).
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

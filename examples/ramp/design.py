"""A 40 mm steel ball set on the top of the ramp. Gravity does the rest: it rolls down, crosses
the floor, bounces off the wall and settles in the goal area in front of it."""

from build123d import Pos, Rot, Sphere

RADIUS = 20.0


def build():
    # In the ramp's own frame (see environment.py): 170 mm up the slope from its centre, resting
    # on its 5 mm thick upper face with 0.5 mm to spare.
    ball = Pos(0, 0, 55) * Rot(0, 15, 0) * Pos(-170, 0, 5 + RADIUS + 0.5) * Sphere(RADIUS)
    ball.label = "ball"
    ball.material = "mild_steel"
    return ball

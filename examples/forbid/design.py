"""The ramp example's ball, unchanged: a 40 mm steel ball set on the top of the ramp.

Run it against ../ramp/environment.py with this directory's objectives: the task now has a pit
between the ramp's foot and the goal, and a ball that simply rolls down the ramp crosses it. The
verdict is FAIL (FORBID_ZONE_HIT) although the ball still ends up in the goal: touching a forbid
zone fails the run at once, whatever happens afterwards.
"""

from build123d import Pos, Rot, Sphere

RADIUS = 20.0


def build():
    # In the ramp's own frame (see ../ramp/environment.py): 170 mm up the slope from its centre,
    # resting on its 5 mm thick upper face with 0.5 mm to spare.
    ball = Pos(0, 0, 55) * Rot(0, 15, 0) * Pos(-170, 0, 5 + RADIUS + 0.5) * Sphere(RADIUS)
    ball.label = "ball"
    ball.material = "mild_steel"
    return ball

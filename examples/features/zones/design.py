"""Zones: goal, forbid and build (see objectives.yaml).

The task (environment.py) drops a steel ball straight onto a pit, a forbid zone on the floor. This
design, built entirely inside the build zone, catches the ball on a sloping deflector that rolls it
off to the side, past the pit, and a backstop keeps it in the goal zone. SUCCESS.
"""

from build123d import Box, Pos, Rot

PARTS = {
    "deflector": {"fixed": True},
    "backstop": {"fixed": True},
}


def build():
    # A 200 × 100 × 6 mm plate tilted 20° down towards +x, its centre 120 mm under the ball.
    deflector = Pos(30, 0, 130) * Rot(0, 20, 0) * Box(200, 100, 6)
    deflector.label = "deflector"
    deflector.material = "pine"
    backstop = Pos(390, 0, 30) * Box(20, 160, 60)
    backstop.label = "backstop"
    backstop.material = "pine"
    return [deflector, backstop]

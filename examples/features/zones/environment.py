"""Task fixtures of the zones example: a steel ball that will drop from 250 mm, straight above a pit
(the pit is a forbid zone in objectives.yaml, not a solid: zones never collide with anything)."""

from build123d import Pos, Sphere


def build():
    ball = Pos(0, 0, 250) * Sphere(20)
    ball.label = "ball"
    ball.material = "mild_steel"
    ball.color = (0.9, 0.45, 0.15)
    return ball

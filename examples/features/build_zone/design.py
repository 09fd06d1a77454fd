"""A build-zone violation: the zones example's design with its backstop moved 60 mm further out.

Run it with the zones example's environment and objectives:
  simjail run examples/features/build_zone/design.py \
      --environment examples/features/zones/environment.py \
      --objectives examples/features/zones/objectives.yaml
The backstop now reaches x = 460 mm, past the build zone's 420 mm, so the run fails at t = 0 with
BUILD_ZONE_VIOLATION before anything moves, although the ball would still end in the goal. Every
design part, fixed ones included, must lie entirely inside a build zone when the run starts;
environment parts are never checked.
"""

from build123d import Box, Pos, Rot

PARTS = {
    "deflector": {"fixed": True},
    "backstop": {"fixed": True},
}


def build():
    deflector = Pos(30, 0, 130) * Rot(0, 20, 0) * Box(200, 100, 6)
    deflector.label = "deflector"
    deflector.material = "pine"
    backstop = Pos(450, 0, 30) * Box(20, 160, 60)  # x from 440 to 460: outside the zone
    backstop.label = "backstop"
    backstop.material = "pine"
    return [deflector, backstop]

"""The jobs a load test submits: benign examples (examples/, their documented verdicts) and
hostile designs (each a real attack with the one failure kind it must get), mixed in a
deterministic order by a seed.

Every case runs quickly and gets the same verdict however loaded the machine is: hostile cases
that depend on a limit set the limit in their own request (a 6 s build budget for the sleeper,
768 MB for the memory bomb), so the answer never depends on how fast this machine imports
build123d.
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.models.simulation import FailureKind, SimulationRequest
from worker.request_files import request_from_files

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
"""The checkout's examples (src/worker/loadtest/ → the project root)."""


@dataclass(frozen=True)
class Expected:
    outcome: str
    failure: FailureKind | None = None

    def __str__(self) -> str:
        return self.outcome if self.failure is None else f"{self.outcome} {self.failure}"


@dataclass(frozen=True)
class Benign:
    """An example run from its files, as `simjail run` runs it."""

    name: str
    design: str
    expected: Expected
    environment: str | None = None
    objectives: str | None = None
    options: str | None = None

    hostile = False

    def request(self, request_id: str, *, render: bool) -> SimulationRequest:
        def path(rel: str | None) -> Path | None:
            return EXAMPLES / rel if rel is not None else None

        return request_from_files(
            EXAMPLES / self.design,
            environment=path(self.environment),
            objectives=path(self.objectives),
            options=path(self.options),
            render=None if render else False,
            request_id=request_id,
        )


@dataclass(frozen=True)
class Hostile:
    """An attack written inline, with the failure kind the sandbox must give it."""

    name: str
    code: str
    expected: Expected
    options: dict[str, Any] = field(default_factory=dict)

    hostile = True

    def request(self, request_id: str, *, render: bool) -> SimulationRequest:
        return SimulationRequest.model_validate(
            {
                "request_id": request_id,
                "design": {"code": textwrap.dedent(self.code)},
                "options": {"render": render, **self.options},
            }
        )


Case = Benign | Hostile


def _feature(name: str, expected: Expected, **kw: str) -> Benign:
    return Benign(
        name,
        f"features/{name}/design.py",
        expected,
        options=f"features/{name}/options.yaml",
        **kw,
    )


SUCCESS = Expected("SUCCESS")

BENIGN: tuple[Benign, ...] = (
    Benign("drop", "drop/design.py", SUCCESS, objectives="drop/objectives.yaml"),
    Benign(
        "ramp",
        "ramp/design.py",
        SUCCESS,
        environment="ramp/environment.py",
        objectives="ramp/objectives.yaml",
    ),
    Benign(
        "forbid",
        "forbid/design.py",
        Expected("FAIL", FailureKind.FORBID_ZONE_HIT),
        environment="ramp/environment.py",
        objectives="forbid/objectives.yaml",
    ),
    Benign(
        "arm",
        "arm/design.py",
        SUCCESS,
        environment="arm/environment.py",
        objectives="arm/objectives.yaml",
        options="arm/options.yaml",
    ),
    _feature("parts", SUCCESS),
    _feature("materials", SUCCESS),
    _feature("fixed", SUCCESS),
    _feature("hinge", SUCCESS),
    _feature("slide", SUCCESS),
    _feature("weld", SUCCESS),
    _feature("actuators", SUCCESS),
    _feature("overload", Expected("FAIL", FailureKind.MOTOR_OVERLOAD)),
    _feature("convex", SUCCESS),
    _feature("penetration", Expected("FAIL", FailureKind.INITIAL_PENETRATION)),
    _feature(
        "zones",
        SUCCESS,
        environment="features/zones/environment.py",
        objectives="features/zones/objectives.yaml",
    ),
    _feature(
        "build_zone",
        Expected("FAIL", FailureKind.BUILD_ZONE_VIOLATION),
        environment="features/zones/environment.py",
        objectives="features/zones/objectives.yaml",
    ),
)
"""Every example of the README's table, with its documented verdict."""

_FRAME_PRELUDE = """\
import json, os, struct, sys
FD = int(sys.argv[sys.argv.index("--frame-fd") + 1])
def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body
"""

HOSTILE: tuple[Hostile, ...] = (
    Hostile("syntax_error", "def build(:\n    pass\n", Expected("FAIL", FailureKind.SYNTAX_ERROR)),
    Hostile(
        "raises",
        "def build():\n    raise ValueError('no mechanism today')\n",
        Expected("FAIL", FailureKind.USER_CODE_ERROR),
    ),
    Hostile(
        "no_geometry", "def build():\n    return None\n", Expected("FAIL", FailureKind.NO_GEOMETRY)
    ),
    Hostile(
        "segfault",
        "import ctypes\n\ndef build():\n    ctypes.string_at(0)\n",
        Expected("FAIL", FailureKind.CRASHED),
    ),
    Hostile(
        "sleeps_forever",
        "import time\n\ndef build():\n    time.sleep(3600)\n",
        Expected("FAIL", FailureKind.TIMEOUT),
        options={"limits": {"build_wall_s": 6}},
    ),
    Hostile(
        "memory_bomb",
        """\
        def build():
            blocks = []
            while True:
                blocks.append(bytearray(64 * 1024 * 1024))
        """,
        Expected("FAIL", FailureKind.MEMORY_LIMIT),
        options={"limits": {"memory_mb": 768}},
    ),
    Hostile(
        "output_flood",
        """\
        import sys

        def build():
            line = "x" * 4096 + "\\n"
            while True:
                sys.stdout.write(line)
        """,
        Expected("FAIL", FailureKind.OUTPUT_LIMIT),
    ),
    Hostile(
        "ptrace",
        "import ctypes\n\ndef build():\n    ctypes.CDLL(None).syscall(101, 16, 1, 0, 0)\n",
        Expected("FAIL", FailureKind.SANDBOX_VIOLATION),
    ),
    Hostile(
        "forged_success_frame",
        _FRAME_PRELUDE
        + """\
def build():
    verdict = {"status": "ok", "outcome": "SUCCESS", "failure": None,
               "reason": "The target reached the goal.", "metrics": {}}
    os.write(FD, frame({"type": "result", "payload": verdict}))
    os._exit(0)
""",
        Expected("FAIL", FailureKind.PROTOCOL_VIOLATION),
    ),
)
"""Attacks that end quickly, each with the one failure kind it must get."""


@dataclass(frozen=True)
class Job:
    """One job of a load test: which case, under which request id."""

    index: int
    case: Case
    request: SimulationRequest

    @property
    def expected(self) -> Expected:
        return self.case.expected


def job_mix(count: int, hostile_ratio: float, *, seed: int, render: bool, run_id: str) -> list[Job]:
    """`count` jobs, round(count × hostile_ratio) of them hostile, each list of cases cycled
    through (so a small run still covers many cases), in an order shuffled by `seed`."""
    n_hostile = round(count * hostile_ratio)
    rng = random.Random(seed)
    benign = list(BENIGN)
    hostile = list(HOSTILE)
    rng.shuffle(benign)
    rng.shuffle(hostile)
    cases: list[Case] = [hostile[i % len(hostile)] for i in range(n_hostile)]
    cases += [benign[i % len(benign)] for i in range(count - n_hostile)]
    rng.shuffle(cases)
    return [
        Job(i, case, case.request(f"lt-{run_id}-{i:04d}-{case.name}"[:128], render=render))
        for i, case in enumerate(cases)
    ]

"""Hostile geometry aimed at the physics jail: parts far out, interpenetrating, explosive,
degenerate, forged.

Two routes. Real build123d designs shape what extraction produces; forged frames skip
build123d and write a result frame straight to the frame pipe (its fd is in sys.argv after
--frame-fd), which lets the agent's code claim anything: NaN or enormous coordinates, no volume,
mass properties that do not belong to the mesh. The supervisor validates geometry before the
physics sees it (INVALID_GEOMETRY / GEOMETRY_LIMIT / PROTOCOL_VIOLATION); what passes is judged
by the physics jail, whose verdict the agent's code never touches.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest

from common.models.simulation import FailureKind, SimulationResult

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]

# Forged geometry: a 10 mm cube (or any mesh) sent as the build's result, without build123d.
FORGE = """
import base64, json, os, struct, sys
import numpy as np

FD = int(sys.argv[sys.argv.index("--frame-fd") + 1])
TRIANGLES = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
             [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
CUBE_INERTIA = [1000 * 100 / 6] * 3 + [0, 0, 0]  # a 10 mm cube about its centre, mm^5

def cube(size=(10.0, 10.0, 10.0)):
    corners = [[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    return np.array(corners, float) * np.array(size), np.array(TRIANGLES)

def b64(a, dtype):
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()

def part(label, v, t, volume=1000.0, com=(5.0, 5.0, 5.0), inertia=CUBE_INERTIA):
    return {"label": label, "source": "design", "volume_mm3": volume, "com_mm": list(com),
            "inertia_mm5": list(inertia),
            "solids": [{"vertices": b64(v, "<f4"), "triangles": b64(t, "<i4")}]}

def send(*parts):
    body = json.dumps({"type": "result", "payload": {"parts": list(parts)}}).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(FD, data):]
    os._exit(0)  # the build child never gets to send its own frame
"""


def forged(body: str) -> str:
    return FORGE + "\ndef build():\n" + textwrap.indent(textwrap.dedent(body), "    ")


# --- real designs -----------------------------------------------------------------------------


def test_parts_far_out_within_the_caps_simulate(run_design: RunDesign) -> None:
    """Parts 100 m from the origin and from each other (the cap is 1 km): a scene 200 m wide
    with two 10 mm boxes is legal and must simulate normally, not overflow or diverge."""
    r = run_design(
        """
        from build123d import Box, Compound, Pos
        def build():
            east = Pos(1e5, 0, 5) * Box(10, 10, 10)
            east.label = "east"
            sky = Pos(-1e5, -1e5, 1e5) * Box(10, 10, 10)
            sky.label = "sky"
            return Compound(children=[east, sky])
        """,
        options={"duration_s": 2},
    )
    assert r.outcome == "SUCCESS", r.reason
    assert r.reason == "The simulation ran 2.00 s and stayed stable."
    east = r.metrics["parts"]["east"]["final_position_mm"]
    sky = r.metrics["parts"]["sky"]["final_position_mm"]
    assert east[0] == pytest.approx(1e5, abs=1) and east[2] == pytest.approx(5, abs=1)
    assert sky[2] == pytest.approx(1e5 - 0.5 * 9.81 * 2**2 * 1e3, rel=1e-3)  # free fall, 2 s


def test_interpenetrating_parts_are_initial_penetration(run_design: RunDesign) -> None:
    r = run_design(
        """
        from build123d import Box, Compound, Pos
        def build():
            a = Pos(0, 0, 10) * Box(20, 20, 20)
            a.label = "a"
            b = Pos(5, 0, 10) * Box(20, 20, 20)
            b.label = "b"
            return Compound(children=[a, b])
        """,
        options={"duration_s": 2},
    )
    assert r.failure == FailureKind.INITIAL_PENETRATION
    assert r.reason == "Part 'a' and part 'b' overlap by 15.0 mm at t=0."


def test_densest_part_dropped_on_the_lightest_does_not_explode(run_design: RunDesign) -> None:
    """A 30 kg anvil (the density cap) dropped 45 cm onto a sheet of 4e-10 kg (density 0.001):
    a mass ratio of 1e11. MuJoCo's soft contacts absorb it: the run stays stable and the anvil
    comes to rest on the sheet on the floor, not through it."""
    r = run_design(
        """
        from build123d import Box, Compound, Pos
        PARTS = {"anvil": {"density": 30000}, "feather": {"density": 0.001}}
        def build():
            feather = Pos(0, 0, 0.5) * Box(20, 20, 1)
            feather.label = "feather"
            anvil = Pos(0, 0, 500) * Box(100, 100, 100)
            anvil.label = "anvil"
            return Compound(children=[feather, anvil])
        """,
        options={"duration_s": 2},
    )
    assert r.outcome == "SUCCESS", r.reason
    assert r.metrics["parts"]["anvil"]["mass_kg"] == pytest.approx(30.0)
    assert 45 < r.metrics["parts"]["anvil"]["final_position_mm"][2] < 56


def test_absurd_motor_force_is_physics_instability(run_design: RunDesign) -> None:
    """1e9 N on a 1 g slider: the state leaves any sane range within a step."""
    r = run_design(
        """
        from build123d import Box, Pos
        PARTS = {"bullet": {"joint": {"type": "slide", "axis": (1, 0, 0),
                 "actuator": {"kind": "motor", "force_limit": 1e9}}}}
        def build():
            b = Pos(0, 0, 50) * Box(10, 10, 10)
            b.label = "bullet"
            return b
        """,
        options={
            "duration_s": 2,
            "controls": [{"actuator": "bullet", "kind": "constant", "value": 1e9}],
        },
        # The task allows forces far beyond the default caps: what the instability rules are for.
        objectives={"actuator_caps": {"max_force": 1e13}},
    )
    assert r.failure == FailureKind.PHYSICS_INSTABILITY
    # Judged after every step: the first step's state already diverged.
    assert r.reason.startswith("The simulation diverged at t=0.00 s (")


def test_control_beyond_mujoco_range_is_physics_instability(run_design: RunDesign) -> None:
    """A control of 1e12 is beyond MuJoCo's mjMAXVAL (1e10): MuJoCo then zeroes every control
    and carries on, warning mjWARN_BADCTRL. Unchecked, the run 'stayed stable' with the
    actuators silently off: a SUCCESS for a mechanism that never moved."""
    r = run_design(
        """
        from build123d import Box, Pos
        PARTS = {"bullet": {"joint": {"type": "slide", "axis": (1, 0, 0),
                 "actuator": {"kind": "motor", "force_limit": 1e12}}}}
        def build():
            b = Pos(0, 0, 50) * Box(10, 10, 10)
            b.label = "bullet"
            return b
        """,
        options={
            "duration_s": 2,
            "controls": [{"actuator": "bullet", "kind": "constant", "value": 1e12}],
        },
        objectives={"actuator_caps": {"max_force": 1e13}},
    )
    assert r.failure == FailureKind.PHYSICS_INSTABILITY
    assert r.reason == "The simulation diverged at t=0.00 s (mjWARN_BADCTRL)."


def test_part_too_light_for_mujoco_is_invalid_geometry(run_design: RunDesign) -> None:
    """A 1 mm cube of density 1 kg/m³ (1 µg): its inertia is below what MuJoCo accepts. The
    physics jail reports the compiler's refusal as INVALID_GEOMETRY, not a crash."""
    r = run_design(
        """
        from build123d import Box, Pos
        PARTS = {"dust": {"density": 1}}
        def build():
            d = Pos(0, 0, 50) * Box(1, 1, 1)
            d.label = "dust"
            return d
        """
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason.startswith("MuJoCo could not compile the scene:")
    assert "inertia must have positive eigenvalues" in r.reason


def test_duplicate_labels_are_invalid_geometry(run_design: RunDesign) -> None:
    r = run_design(
        """
        from build123d import Box, Compound, Pos
        def build():
            a = Pos(0, 0, 5) * Box(10, 10, 10)
            b = Pos(50, 0, 5) * Box(10, 10, 10)
            a.label = b.label = "twin"
            return Compound(children=[a, b])
        """
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == "The geometry was rejected: duplicate part labels ['twin']."


def test_absurd_density_in_parts_is_invalid_geometry(run_design: RunDesign) -> None:
    r = run_design(
        """
        from build123d import Box, Pos
        PARTS = {"neutron_star": {"density": 1e9}}
        def build():
            b = Pos(0, 0, 5) * Box(10, 10, 10)
            b.label = "neutron_star"
            return b
        """
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The design's build failed: «PARTS metadata is invalid at density: Input should be less "
        "than or equal to 30000»"
    )


# --- forged geometry frames -------------------------------------------------------------------


def test_forged_cube_is_judged_by_the_physics(run_design: RunDesign) -> None:
    """The control case of the forgeries below: a well-formed forged cube is simply geometry."""
    r = run_design(forged('send(part("cube", *cube()))'))
    assert r.outcome == "SUCCESS", r.reason


def test_forged_nan_in_frame_json_is_protocol_violation(run_design: RunDesign) -> None:
    r = run_design(forged('send(part("cube", *cube(), com=(float("nan"), 5.0, 5.0)))'))
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert r.reason.startswith("The design build step broke the result protocol: ")
    assert r.reason.endswith("frame is not UTF-8 JSON: NaN is not JSON.")


def test_forged_nan_mesh_vertex_is_invalid_geometry(run_design: RunDesign) -> None:
    """NaN inside the base64 float32 vertex buffer, where the JSON parser cannot see it."""
    r = run_design(
        forged(
            """
            v, t = cube()
            v[3, 0] = np.nan
            send(part("cube", v, t))
            """
        )
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'cube' has non-finite or enormous coordinates."
    )


def test_forged_enormous_mesh_coordinates_are_invalid_geometry(run_design: RunDesign) -> None:
    r = run_design(
        forged(
            """
            v, t = cube()
            v[0] = (1e12, 1e12, 1e12)
            send(part("cube", v, t))
            """
        )
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'cube' has non-finite or enormous coordinates."
    )


def test_forged_enormous_centre_of_mass_is_invalid_geometry(run_design: RunDesign) -> None:
    r = run_design(forged('send(part("cube", *cube(), com=(1e12, 0.0, 0.0)))'))
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == "The geometry was rejected: design part 'cube' lies further than 1 km out."


def test_forged_flat_solid_is_invalid_geometry(run_design: RunDesign) -> None:
    r = run_design(forged('send(part("sheet", *cube(size=(10, 10, 0))))'))
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == "The geometry was rejected: design part 'sheet' has a flat solid."


def test_forged_zero_volume_is_protocol_violation(run_design: RunDesign) -> None:
    """Zero volume breaks the Geometry schema itself (volume_mm3 > 0): the frame is malformed."""
    r = run_design(forged('send(part("ghost", *cube(), volume=0.0))'))
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert r.reason == (
        "The design build step broke the result protocol: the design geometry is malformed at "
        "parts.0.volume_mm3: Input should be greater than 0."
    )


def test_forged_collinear_mesh_is_invalid_geometry(run_design: RunDesign) -> None:
    """Vertices on one diagonal line: every axis has extent, so the flat-solid check passes,
    but the mesh encloses no volume: the supervisor refuses it before the physics jail (whose
    MuJoCo compiler would refuse it too, with "collinear vertices")."""
    r = run_design(
        forged(
            """
            v = np.array([[i, i, i] for i in range(8)], float)
            t = np.array(TRIANGLES[:4]) % 8
            send(part("needle", v, t, 100.0, (3.5, 3.5, 3.5), [500] * 3 + [0] * 3))
            """
        )
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'needle': its CAD solid has a volume of 100 mm³ "
        "but its mesh encloses 0 mm³, more than the tessellation can explain (±1 mm³); the "
        "solid is probably not closed or intersects itself."
    )


def test_forged_centre_of_mass_in_the_goal_is_invalid_geometry(run_design: RunDesign) -> None:
    """The goal rule follows the target's centre of mass, and the centre of mass is whatever the
    build reported. A cube resting at the origin that claims its centre of mass is 1 m away, in
    the goal zone, 'reached the goal' without moving, until mass properties were checked against
    the mesh they come with."""
    goal = {"name": "goal", "kind": "goal", "min": [950, -50, -50], "max": [1050, 50, 60]}
    r = run_design(
        forged('send(part("cube", *cube(), com=(1000.0, 5.0, 5.0), inertia=[1e20] * 3 + [0] * 3))'),
        objectives={"target": "cube", "zones": [goal], "goal_hold_s": 1.0},
        options={"duration_s": 2},
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'cube' claims a centre of mass outside its solids."
    )


def test_forged_enormous_volume_is_invalid_geometry(run_design: RunDesign) -> None:
    """Mass is volume × density: a 10 mm cube claiming 1e15 mm³ would weigh a million tonnes."""
    r = run_design(forged('send(part("cube", *cube(), volume=1e15))'))
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'cube' claims more volume than its solids can hold."
    )


def test_forged_enormous_inertia_is_invalid_geometry(run_design: RunDesign) -> None:
    """An inertia of 1e30 mm⁵ on a 10 mm cube makes it a part that cannot be turned."""
    r = run_design(forged('send(part("cube", *cube(), inertia=[1e30] * 3 + [0] * 3))'))
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: design part 'cube' claims an inertia its solids cannot have."
    )


def test_forged_sphere_claim_on_a_cube_is_invalid_geometry(run_design: RunDesign) -> None:
    """A cube that claims to be the ball through its corners would roll as a ball: the claim is
    checked against its mesh by the supervisor, and the mesh covers 37% of that sphere."""
    r = run_design(
        forged(
            """
            v, t = cube()
            p = part("cube", v, t)
            p["solids"][0]["primitive"] = {"kind": "sphere", "center": [5, 5, 5],
                                           "size": [5 * 3 ** 0.5, 0, 0]}
            send(p)
            """
        )
    )
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason.startswith(
        "The geometry was rejected: design part 'cube' solid 0 is claimed to be a sphere but "
        "its mesh is not one (it encloses 1000 mm³, the shape 2720.7 mm³)"
    ), r.reason


def test_honest_twin_a_forged_cube_with_its_true_box_claim_simulates(
    run_design: RunDesign,
) -> None:
    r = run_design(
        forged(
            """
            v, t = cube()
            p = part("cube", v, t)
            p["solids"][0]["primitive"] = {"kind": "box", "center": [5, 5, 5],
                                           "size": [5, 5, 5]}
            send(p)
            """
        ),
        options={"duration_s": 0.2},
    )
    assert r.outcome == "SUCCESS", r.reason
    assert r.metrics["collision"]["primitive"] == 1

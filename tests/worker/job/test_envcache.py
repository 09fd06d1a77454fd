"""The environment cache: a key that any changed byte (of the source, its name, the policy)
changes, entries read back as a jail's output (validated, capped, never through a link), a
bounded directory, and, end to end, a repeated environment that starts no build jail."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from common.models.simulation import SimulationRequest
from worker.job.envcache import EnvCache
from worker.job.sources import Source
from worker.pipeline import run_request
from worker.sandbox.launcher import make_launcher
from worker.sandbox.protocol import FrameCaps, ResultFrame, encode, geometry_caps
from worker.settings import Settings
from worker.simulation.geometry import Geometry, Mesh, Part, PartMeta
from worker.storage.local import LocalStore

CAPS = geometry_caps(200, 200_000, 400_000)
CUBE_V = np.array([[x, y, z] for x in (0, 10) for y in (0, 10) for z in (0, 10)], dtype=np.float64)
CUBE_T = np.array(
    [
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
    ]
)  # fmt: skip
ENV = "from build123d import Box, Pos\nresult = Pos(0, 0, 5) * Box(400, 400, 10)\n"


def geometry(label: str = "floor", source: str = "environment") -> Geometry:
    i = 10**5 / 6
    part = Part(
        label=label,
        source=source,  # type: ignore[arg-type]
        volume_mm3=1000.0,
        com_mm=(5.0, 5.0, 5.0),
        inertia_mm5=(i, i, i, 0.0, 0.0, 0.0),
        solids=[Mesh.from_arrays(CUBE_V, CUBE_T)],
        meta=PartMeta.model_validate({"fixed": True}),
    )
    return Geometry(parts=[part])


@pytest.fixture
def cache(tmp_path: Path) -> EnvCache:
    return EnvCache(tmp_path / "env-cache", 1 << 20)


def test_a_changed_byte_of_the_source_name_policy_or_tessellation_changes_the_key(
    cache: EnvCache,
) -> None:
    base = cache.key(Source("environment", code=ENV), "sha256:aa", "normal")
    assert base == cache.key(Source("environment", code=ENV), "sha256:aa", "normal")
    changed = {
        cache.key(
            Source("environment", code=ENV.replace("400,", "401,", 1)), "sha256:aa", "normal"
        ),
        cache.key(Source("environment", code=ENV + " "), "sha256:aa", "normal"),
        cache.key(Source("environment", code=ENV), "sha256:ab", "normal"),
        cache.key(
            Source("environment", step=ENV.encode()), "sha256:aa", "normal"
        ),  # environment.step
        cache.key(Source("design", code=ENV), "sha256:aa", "normal"),  # design.py
        cache.key(Source("environment", code=ENV), "sha256:aa", "fine"),  # tessellation
        cache.key(Source("environment", code=ENV), "sha256:aa", 0.5),
    }
    assert base not in changed and len(changed) == 7


def test_what_was_put_comes_back_equal(cache: EnvCache) -> None:
    key = cache.key(Source("environment", code=ENV), "sha256:aa", "normal")
    assert cache.get(key, CAPS) is None
    cache.put(key, geometry())
    assert cache.get(key, CAPS) == geometry()
    assert (cache.root / f"{key}.json").stat().st_mode & 0o777 == 0o600
    assert cache.root.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"type": "progress", "phase": "x"}',
        encode(ResultFrame(payload={"parts": "no"}))[4:],
        encode(ResultFrame(payload=geometry(source="design").model_dump(mode="json")))[4:],
        b"[" * 100 + b"]" * 100,
    ],
    ids=["garbage", "not-a-result", "not-geometry", "design-parts", "deep"],
)
def test_an_entry_that_is_not_a_valid_build_result_is_refused_and_removed(
    cache: EnvCache, body: bytes
) -> None:
    key = cache.key(Source("environment", code=ENV), "sha256:aa", "normal")
    cache.put(key, geometry())
    (cache.root / f"{key}.json").write_bytes(body)
    assert cache.get(key, CAPS) is None
    assert not (cache.root / f"{key}.json").exists()


def test_an_entry_over_the_frame_cap_is_refused(cache: EnvCache) -> None:
    key = cache.key(Source("environment", code=ENV), "sha256:aa", "normal")
    cache.put(key, geometry())
    assert cache.get(key, FrameCaps(frame_bytes=100, total_bytes=200, values=1000)) is None
    assert not (cache.root / f"{key}.json").exists()


def test_a_link_in_the_cache_is_never_followed(cache: EnvCache, tmp_path: Path) -> None:
    key = cache.key(Source("environment", code=ENV), "sha256:aa", "normal")
    cache.root.mkdir(parents=True)
    target = tmp_path / "elsewhere.json"
    target.write_bytes(encode(ResultFrame(payload=geometry().model_dump(mode="json")))[4:])
    (cache.root / f"{key}.json").symlink_to(target)
    assert cache.get(key, CAPS) is None
    assert target.exists() and not (cache.root / f"{key}.json").is_symlink()


def test_the_cache_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    one = len(encode(ResultFrame(payload=geometry().model_dump(mode="json")))) - 4
    cache = EnvCache(tmp_path / "c", 2 * one + one // 2)  # room for two entries
    keys = [cache.key(Source("environment", code=f"{ENV}# {i}\n"), "d", "normal") for i in range(3)]
    cache.put(keys[0], geometry())
    cache.put(keys[1], geometry())
    old = (cache.root / f"{keys[1]}.json").stat().st_mtime - 10
    os.utime(cache.root / f"{keys[1]}.json", (old, old))
    assert cache.get(keys[0], CAPS) is not None  # used: the most recent now
    cache.put(keys[2], geometry())
    assert [cache.get(k, CAPS) is not None for k in keys] == [True, False, True]
    assert cache.size_bytes() <= cache.max_bytes


@pytest.mark.slow
def test_a_repeated_environment_starts_no_build_jail_and_a_changed_byte_misses(
    tmp_path: Path, jail_tmp: object
) -> None:
    settings = Settings(data_dir=tmp_path / "data", sandbox="nsjail")
    store = LocalStore(tmp_path / "artifacts")
    design = "from build123d import Box, Pos\nresult = Pos(0, 0, 30) * Box(20, 20, 20)\n"
    launcher = make_launcher("nsjail", settings.paths.policy_root, settings.reuse)

    def run(env: str, n: int) -> tuple[dict[str, object], str]:
        request = SimulationRequest.model_validate(
            {
                "request_id": f"envcache-{n}",
                "design": {"code": design},
                "environment": {"code": env},
                "options": {"render": False, "duration_s": 0.2},
            }
        )
        r = run_request(request, settings, store, launcher=launcher)
        assert r.outcome == "SUCCESS", r.reason
        logs = Path(r.artifact_urls["logs"].removeprefix("file://")).read_text()
        return r.metrics["resources"], logs

    try:
        first, _ = run(ENV, 1)
        again, logs = run(ENV, 2)
        changed, _ = run(textwrap.dedent(ENV) + "# one more line\n", 3)
    finally:
        launcher.close()
    assert "build_environment" in first
    assert "build_environment" not in again and "build_design" in again
    assert "===== environment build: from the cache (" in logs
    assert "build_environment" in changed
    assert len(list((tmp_path / "data" / "env-cache").glob("*.json"))) == 2

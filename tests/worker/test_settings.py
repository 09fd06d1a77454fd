"""Settings: split by purpose, one flat name per field (its SIMJAIL_* variable)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from common.models.simulation import Limits
from worker.errors import InvalidRequest
from worker.settings import JobLimits, Settings


def test_flat_names_reach_their_group() -> None:
    s = Settings(build_wall_s=8, data_dir="/d", store="s3", s3_bucket="b", sandbox="nsjail")
    assert s.limits.build_wall_s == 8
    assert s.paths.data_dir == Path("/d")
    assert s.store.kind == "s3" and s.store.s3_bucket == "b"


def test_from_env_reads_every_group_by_its_simjail_name() -> None:
    s = Settings.from_env(
        {
            "SIMJAIL_PHYSICS_WALL_S": "60",
            "SIMJAIL_ARTIFACTS_DIR": "/a",
            "SIMJAIL_STORE": "s3",
            "SIMJAIL_S3_PREFIX": "p",
            "SIMJAIL_SANDBOX": "unsafe-subprocess",
            "UNRELATED": "x",
        }
    )
    assert s.limits.physics_wall_s == 60
    assert s.paths.artifacts_root == Path("/a")
    assert s.store.kind == "s3" and s.store.s3_prefix == "p"
    assert s.sandbox == "unsafe-subprocess"


def test_an_unknown_setting_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="buld_wall_s"):
        Settings(buld_wall_s=1)


def test_replace_keeps_the_other_fields_of_a_group() -> None:
    s = Settings(store="s3", s3_bucket="b").replace(s3_prefix="x", sandbox="unsafe-subprocess")
    assert (s.store.kind, s.store.s3_bucket, s.store.s3_prefix) == ("s3", "b", "x")
    assert s.sandbox == "unsafe-subprocess"


def test_request_limits_only_tighten() -> None:
    lim = JobLimits(physics_wall_s=60, memory_mb=1000, physics_memory_mb=3000)
    t = lim.tighten(Limits(wall_s=30, memory_mb=500))
    assert (t.physics_wall_s, t.memory_mb, t.physics_memory_mb) == (30, 500, 500)
    with pytest.raises(InvalidRequest, match=r"^options\.limits\.wall_s: 61\.0 is above"):
        lim.tighten(Limits(wall_s=61))


def test_the_warm_path_and_the_environment_cache_are_settings_of_their_own() -> None:
    assert Settings().reuse.warm is True and Settings().reuse.env_cache_mb == 256
    s = Settings.from_env({"SIMJAIL_WARM": "0", "SIMJAIL_ENV_CACHE_MB": "0"})
    assert s.reuse.warm is False and s.reuse.env_cache_mb == 0
    s = Settings.from_env({"SIMJAIL_ZYGOTE_JOBS": "10", "SIMJAIL_ZYGOTE_MAX_AGE_S": "60"})
    assert (s.reuse.zygote_jobs, s.reuse.zygote_max_age_s) == (10, 60)
    with pytest.raises(ValidationError, match="zygote_max_age_s"):
        Settings(zygote_max_age_s=7200)  # a zygote must be retired before its time_limit

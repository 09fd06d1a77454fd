"""The faults a load test injects while jobs are in flight, each for real:

- `kill-worker`: SIGKILL a worker while a jail of a job runs under it (what an OOM kill or a
  lost node does), then start a replacement, which removes the dead worker's jails, cgroups
  and job directories at start; Temporal notices the dead attempt at the heartbeat timeout
  and retries it.
- `restart-server`: stop the Temporal server (SIGTERM) for `outage_s` and start it again on
  the same database and port (the load test's own server only).
- `store-outage`: the workers' artifact directory stops being usable for `outage_s` (renamed
  aside, a file in its place: every write fails, as on a full or unmounted disk; root ignores
  permissions), then comes back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from worker.loadtest.cluster import Cluster
from worker.simulation.temporal.dev import DevServer

Fault = Literal["kill-worker", "restart-server", "store-outage"]
FAULTS: tuple[Fault, ...] = ("kill-worker", "restart-server", "store-outage")


@dataclass
class Injected:
    kind: Fault
    at_s: float
    took_s: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at_s": round(self.at_s, 2),
            "took_s": round(self.took_s, 2),
            "detail": self.detail,
        }


async def inject(
    kind: Fault, cluster: Cluster, server: DevServer | None, outage_s: float, t0: float
) -> Injected:
    """Inject one fault now and return once it is over (the system may still be recovering)."""
    at = time.monotonic() - t0
    t = time.monotonic()
    if kind == "kill-worker":
        detail = await kill_worker(cluster)
    elif kind == "restart-server":
        if server is None:
            raise ValueError("restart-server needs the load test's own server")
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(outage_s)
        await asyncio.to_thread(server.start)
        detail = f"server {server.address} down {outage_s:g} s, restarted on the same database"
    else:
        detail = await store_outage(cluster, outage_s)
    return Injected(kind, at, time.monotonic() - t, detail)


async def kill_worker(cluster: Cluster, wait_s: float = 60.0) -> str:
    """SIGKILL the first worker seen running a job (waiting up to `wait_s` for one), then start
    its replacement."""
    deadline = time.monotonic() + wait_s
    while True:
        busy = [w for w in cluster.live() if w.running_job()]
        if busy or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    victims = busy or cluster.live()[:1]
    if not victims:
        return "no live worker to kill"
    victim = victims[0]
    await asyncio.to_thread(victim.kill)
    replacement = cluster.start_worker()
    await asyncio.to_thread(cluster.wait_ready, replacement)
    state = "while it ran a job" if busy else "while it was idle"
    return f"SIGKILLed worker {victim.pid} {state}; started worker {replacement.pid}"


async def store_outage(cluster: Cluster, outage_s: float) -> str:
    root = cluster.artifacts
    aside = root.with_name(root.name + ".outage")
    root.rename(aside)
    root.write_text("the artifact store is down (simjail loadtest store-outage)\n")
    try:
        await asyncio.sleep(outage_s)
    finally:
        root.unlink()
        aside.rename(root)
    return f"artifact directory {root} unusable for {outage_s:g} s"

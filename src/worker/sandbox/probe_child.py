"""A trivial child for `simjail policy check`: proves a jail starts, runs our interpreter with
its packages, and (physics) can render offscreen. Reports what it sees as one result frame."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from worker.sandbox.child import exit_now, parse_args, send
from worker.sandbox.protocol import ProbeJob, ResultFrame


def main() -> None:
    args = parse_args()
    seen: dict[str, object] = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        # As exec'd by the jail: importing worker.simulation has since set MUJOCO_GL in
        # os.environ, which /proc/self/environ does not show.
        "env_keys": sorted(
            kv.split(b"=", 1)[0].decode()
            for kv in Path("/proc/self/environ").read_bytes().split(b"\0")
            if kv
        ),
        "out_writable": os.access(args.out, os.W_OK),
    }
    if ProbeJob.read(args.job_path).render:
        import mujoco

        m = mujoco.MjModel.from_xml_string(
            "<mujoco><worldbody><geom size='1'/></worldbody></mujoco>"
        )
        r = mujoco.Renderer(m, 64, 64)
        d = mujoco.MjData(m)
        mujoco.mj_forward(m, d)
        r.update_scene(d)
        seen["rendered_mean"] = float(r.render().mean())
        r.close()
    send(args.channel(), ResultFrame(payload=seen))
    exit_now()


if __name__ == "__main__":
    main()

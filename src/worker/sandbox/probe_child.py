"""A trivial child for `simjail policy check`: proves a jail starts, runs our interpreter with
its packages, and (physics) can render offscreen. Reports what it sees as one result frame."""

from __future__ import annotations

import argparse
import json
import os
import socket


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", required=True)
    ap.add_argument("--frame-fd", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    seen: dict[str, object] = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "env_keys": sorted(os.environ),
        "out_writable": os.access(args.out, os.W_OK),
    }
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    if job.get("render"):
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
    # Imported last: worker.simulation sets MUJOCO_GL when imported, which would show above.
    from worker.sandbox.protocol import encode

    os.write(args.frame_fd, encode({"type": "result", "payload": seen}))
    os._exit(0)


if __name__ == "__main__":
    main()

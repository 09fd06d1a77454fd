"""A development S3 store: moto's server on 0.0.0.0:9000 (in memory: everything is lost when it
stops), with the buckets named in SIMJAIL_S3_BUCKET (comma-separated) made before it says
`ready`. For deploy/compose.yaml's development stack only; production uses a real S3 service
or MinIO (README.md, Operations). Runs until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import threading

import boto3
from moto.server import ThreadedMotoServer


def main() -> None:
    port = int(os.environ.get("DEVSTORE_PORT", "9000"))
    buckets = [b for b in os.environ.get("SIMJAIL_S3_BUCKET", "simjail").split(",") if b]
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=port, verbose=False)
    server.start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
    print(f"devstore ready on port {port}, buckets {buckets}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()

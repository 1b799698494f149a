"""Fixtures of the batch tests: a real S3 endpoint (moto's server) shared by every test that needs one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

BUCKET = "augury-test"


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3 endpoint (moto's server, in a process of its own on a free loopback port) for the whole
    session, and the environment that points pyarrow (and the worker processes, which inherit it) at it.
    Its own process, not a thread of this one: a process pool forks only a process without threads."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on port {port}") from None
                time.sleep(0.05)
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET)
            yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture()
def s3(s3_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A prefix of the test's own in the session's bucket."""
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').replace(']', '')}"

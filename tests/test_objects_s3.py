"""Checkpoint objects on S3 (``RETROLOG_OBJECTS=s3://bucket/prefix``), against a real S3 server.

The server is moto's standalone server (its HTTP server in a thread of this process, on
127.0.0.1 only); the stores, recording scripts, CLI commands and replay workers reach it over
HTTP through s3fs/aiobotocore, as they would reach AWS or MinIO. Transient failures come from a
small HTTP proxy in front of the server that answers the first requests with real 5xx responses.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
pytest.importorskip("s3fs", reason="s3fs is in the s3 extra")

from retrolog.objects import (  # noqa: E402
    CorruptObjectError,
    FsspecObjectStore,
    ObjectNotFoundError,
    digest_bytes,
    open_object_store,
)

from .conftest import git, run_python, script_env, write_script  # noqa: E402
from .replay.scripts import ARG_SETS, TRAIN, with_statements  # noqa: E402

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port; the AWS variables point every client at it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in (*AWS_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=url)
    try:
        yield url
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def s3_client(url: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=url)


@pytest.fixture
def bucket(endpoint: str) -> str:
    name = f"ckpt-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def keys(endpoint: str, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = s3_client(endpoint)
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def key_of(digest: str, prefix: str = "objects") -> str:
    hexd = digest.split(":")[1]
    return f"{prefix}/{hexd[:2]}/{hexd[2:]}"


def test_write_read_dedup_and_listing(endpoint: str, bucket: str) -> None:
    store = open_object_store(f"s3://{bucket}/objects")
    assert isinstance(store, FsspecObjectStore)
    payload = os.urandom(300_000)
    digest = store.put(payload)
    assert digest == digest_bytes(payload)
    assert store.put(payload) == digest  # deduplicated: same name, nothing new
    small = store.put(b"tiny")
    stored = keys(endpoint, bucket)
    assert stored == {key_of(digest): payload, key_of(small): b"tiny"}  # real objects, real bytes
    assert store.get(digest) == payload and store.size(digest) == 300_000
    assert store.has(small) and sorted(store.iter_digests()) == sorted([digest, small])
    store.delete(small)
    assert not store.has(small) and list(store.iter_digests()) == [digest]


def test_missing_and_corrupt_objects_are_named(endpoint: str, bucket: str) -> None:
    store = open_object_store(f"s3://{bucket}/objects")
    digest = store.put(b"weights" * 1000)
    client = s3_client(endpoint)
    client.put_object(Bucket=bucket, Key=key_of(digest), Body=b"weighs" * 1000 + b"t")
    with pytest.raises(CorruptObjectError, match=digest):
        store.get(digest)
    # A blob of the wrong size under the name is not trusted for deduplication: it is rewritten.
    assert store.put(b"weights" * 1000) == digest and store.get(digest) == b"weights" * 1000
    client.delete_object(Bucket=bucket, Key=key_of(digest))
    assert not store.has(digest)  # another process deleted it: no stale cached answer
    with pytest.raises(ObjectNotFoundError, match=f"object {digest} is not in the store"):
        store.get(digest)


WRITER = """
import os, sys
from retrolog.objects import open_object_store
store = open_object_store(sys.argv[1])
me = int(sys.argv[2])
for i in range(me * 10, me * 10 + 20):   # 10 blobs of its own, 10 shared with the other writer
    store.put(("blob %d " % i).encode() * 5000)
print("ok")
"""


def test_two_concurrent_writers(endpoint: str, bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/objects"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(me)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=script_env(),
        )
        for me in (0, 1)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    store = open_object_store(url)
    expected = {digest_bytes((f"blob {i} ").encode() * 5000): i for i in range(30)}
    assert sorted(store.iter_digests()) == sorted(expected)
    for digest, i in expected.items():
        assert store.get(digest) == (f"blob {i} ").encode() * 5000


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to the S3 server, answering the first ``failures[method]`` requests of a method
    with a real HTTP 503 (SlowDown) or 500 (InternalError), as S3 does under load."""

    def __init__(self, upstream: str, failures: dict[str, int]) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.failures = dict(failures)
        self.served_errors: dict[str, int] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: FlakyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            fail = self.server.failures.get(self.command, 0) > 0 and "/" in self.path[1:]
            if fail:
                self.server.failures[self.command] -= 1
                self.server.served_errors[self.command] = (
                    self.server.served_errors.get(self.command, 0) + 1
                )
        if fail:
            code, name = (503, "SlowDown") if self.command == "PUT" else (500, "InternalError")
            data = f"<Error><Code>{name}</Code><Message>try again</Message></Error>".encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        conn = http.client.HTTPConnection(self.server.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle


def test_transient_errors_are_retried(endpoint: str, bucket: str) -> None:
    proxy = FlakyProxy(endpoint, {"PUT": 2, "GET": 1})
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        host, port = proxy.server_address[:2]
        store = FsspecObjectStore(
            f"s3://{bucket}/objects",
            client_kwargs={"endpoint_url": f"http://{host}:{port}"},
            skip_instance_cache=True,
        )
        payload = os.urandom(50_000)
        digest = store.put(payload)
        assert store.get(digest) == payload
        assert proxy.served_errors == {"PUT": 2, "GET": 1}  # each failed once or twice, then passed
        assert keys(endpoint, bucket)[key_of(digest)] == payload
    finally:
        proxy.shutdown()
        proxy.server_close()


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=script_env(**env),
        timeout=180,
    )


@pytest.mark.slow
def test_record_replay_du_gc_on_s3(
    endpoint: str, bucket: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{bucket}/team/objects"
    write_script(project, TRAIN.replace('retrolog.arg("epochs", 4)', 'retrolog.arg("epochs", 2)'))
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py", "--kwargs", *ARG_SETS[0], RETROLOG_OBJECTS=url)
    blobs = keys(endpoint, bucket, "team/objects/")
    assert blobs, "checkpoints were written to the bucket"
    assert not (project / ".retrolog" / "objects").exists()  # nothing went to the local default

    usage = cli(project, "du", "-f", "json", RETROLOG_OBJECTS=url)
    assert usage.returncode == 0, usage.stderr
    (row,) = json.loads(usage.stdout)
    assert row["checkpoints"] > 0 and 0 < row["bytes"] <= sum(map(len, blobs.values()))

    # Damage every tensor blob on the server: replay must notice, name it, and re-execute.
    client = s3_client(endpoint)
    for key, data in blobs.items():
        if len(data) > 1000:
            client.put_object(Bucket=bucket, Key=key, Body=data[:-1] + bytes([data[-1] ^ 0xFF]))
    source = with_statements(
        TRAIN.replace('retrolog.arg("epochs", 4)', 'retrolog.arg("epochs", 2)'), "weight_norm"
    )
    write_script(project, source)
    monkeypatch.setenv("RETROLOG_OBJECTS", url)
    from retrolog import dataframe
    from retrolog.replaying import replay

    report = replay("weight_norm", workers=1)
    (run,) = report.runs
    assert run.fidelity == "reproduced", report.summary()
    assert any("checkpoint unavailable" in f and "sha256:" in f for f in run.fallbacks)
    values = dataframe("weight_norm")["weight_norm"].dropna()
    assert len(values) == 2

    # rm, then gc removes every blob of the bucket's prefix (no other run references them).
    run_id = report.runs[0].run_id
    assert cli(project, "rm", run_id, "--yes", RETROLOG_OBJECTS=url).returncode == 0
    gc = cli(project, "gc", RETROLOG_OBJECTS=url)
    assert gc.returncode == 0, gc.stderr
    assert f"removed {len(blobs)} blob(s)" in gc.stdout
    assert keys(endpoint, bucket, "team/objects/") == {}


def test_unreachable_store_never_fails_the_run(bucket: str, project: Path) -> None:
    """A bucket that does not exist: checkpoints are lost with a warning, the run finishes."""
    script = textwrap.dedent(
        TRAIN.replace('retrolog.arg("epochs", 4)', 'retrolog.arg("epochs", 1)')
    )
    write_script(project, script)
    proc = run_python(project, "train.py", RETROLOG_OBJECTS=f"s3://no-such-{bucket}/objects")
    assert "retrolog" in proc.stderr  # warned
    from retrolog import runs

    assert runs(project=project).iloc[0]["status"] == "finished"

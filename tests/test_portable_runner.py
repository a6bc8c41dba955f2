"""The QuickDraw job through Beam's portable job API, with a real job service this test starts.

Flink and Dataflow take jobs through the same portable API (a job service, artifact staging,
an SDK harness); Flink's own job server is a Java download this machine cannot make, so the
runner behind the service here is Beam's local one. What is exercised: job submission,
option pass-through and the SDK harness in LOOPBACK mode; what is not: Flink's scheduler.
"""

import os
import socket
import subprocess
import sys
import time

import pytest

from beam_jobs import quickdraw_to_tfrecord
from tests.conftest import QUICKDRAW
from tests.test_quickdraw_job import output_bytes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def job_service(tmp_path):
    port = _free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(port),
         "--staging_dir", str(tmp_path / "staging")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "job_service.log", "wb"))
    deadline = time.time() + 120
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if service.poll() is not None:
            pytest.fail(f"job service exited: {(tmp_path / 'job_service.log').read_text()[-2000:]}")
        time.sleep(0.5)
    else:
        service.kill()
        pytest.fail("job service did not listen within 120 s")
    yield f"localhost:{port}"
    service.terminate()
    service.wait(timeout=30)


def test_portable_runner_writes_the_same_bytes_as_the_direct_runner(job_service, tmp_path, shared_data):
    flags = [f"--input={QUICKDRAW}/raw/*.ndjson", "--num_shards=2"]
    direct = quickdraw_to_tfrecord.run(flags + [f"--output_dir={tmp_path / 'direct'}"])
    portable = quickdraw_to_tfrecord.run(flags + [
        f"--output_dir={tmp_path / 'portable'}", "--runner=PortableRunner", f"--job_endpoint={job_service}",
        "--environment_type=LOOPBACK"])
    assert portable["options"]["runner"] == "PortableRunner"
    assert {k: portable[k] for k in ("read", "written", "rejected")} == {k: direct[k] for k in ("read", "written", "rejected")}
    assert output_bytes(str(tmp_path / "portable")) == output_bytes(str(tmp_path / "direct"))
    assert os.path.exists(tmp_path / "portable" / "run_summary.json")

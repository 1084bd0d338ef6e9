"""UI smoke test: a real dagster-webserver process on a free port, queried through GraphQL."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

PROJECT = Path(__file__).resolve().parents[1]

LOCATION_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              sensors { name sensorState { status } }
              jobs { name }
            }
          }
        }
      }
    }
  }
  assetNodes { assetKey { path } groupName isPartitioned }
}
"""

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())
    storage = tmp_path_factory.mktemp("storage")
    port = _free_port()
    env = dict(os.environ, DAGSTER_HOME=str(home), TRANCE_STORAGE=str(storage), TRANCE_PROFILE="demo")
    exe = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(exe), "-w", str(PROJECT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("dagster-webserver did not answer /server_info within 120 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    # The code location loads in a subprocess; its first answer can still be "loading".
    r = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body.get("errors")
    return body["data"]


def _loaded_workspace(url: str) -> dict:
    deadline = time.time() + 90
    while True:
        data = _graphql(url, LOCATION_QUERY)
        entries = data["workspaceOrError"]["locationEntries"]
        loc = entries[0]["locationOrLoadError"] if entries else None
        if loc is not None or time.time() > deadline:
            return data
        time.sleep(1)


def test_code_location_loads_with_assets_and_sensor(webserver):
    data = _loaded_workspace(webserver)
    entries = data["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["trance_assets"]
    loc = entries[0]["locationOrLoadError"]
    assert loc["__typename"] == "RepositoryLocation", loc.get("message")
    (repo,) = loc["repositories"]
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    # No implicit default_automation_condition_sensor (it would start STOPPED): the project's own
    # automation sensor (review_queue's refresh) runs from the start.
    assert sensors == {"reference_audio_sensor": "RUNNING", "gold_melodies_sensor": "RUNNING", "automation_condition_sensor": "RUNNING"}
    assert {"reference_track_job", "gold_melody_job"} <= {j["name"] for j in repo["jobs"]}

    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {k: (n["groupName"], n["isPartitioned"]) for k, n in nodes.items()} == {
        "reference_audio": ("ingest", True),
        "tier2/separated_lead": ("tier2", True),
        "tier2/transcription": ("tier2", True),
        "tier2/melody": ("tier2", True),
        "tier2/review_queue": ("tier2", False),
        "tier1/melody": ("tier1", True),
        "tier3/synthetic_melodies": ("tier3", False),
        "tier3/gigamidi_melodies": ("tier3", False),
        "tier3/public_domain_melodies": ("tier3", False),
        **{f"corpus/{name}": ("corpus", False) for name in (
            "augmented", "filtered", "spot_check", "splits", "remi_tokens", "notesequence_tfrecords", "metadata", "dataset_card",
            "midi_model_tokens",
        )},
        **{f"evaluation/{name}": ("evaluation", False) for name in (
            "reference_stats", "listening_test_kit", "listening_test_results", "benchmark_report"
        )},
        **{f"models/{name}": ("models", False) for name in (
            "melody_rnn_base", "musicvae_base", "melody_rnn_trance", "musicvae_trance",
            "midi_model_base", "midi_model_trance_lora", "midi_model_onnx", "midi_model_onnx_int8",
        )},
    }


def test_materialize_click_queues_a_run(webserver):
    """What the Materialize button does: launch __ASSET_JOB for one asset; with no daemon it queues."""
    _loaded_workspace(webserver)
    params = {
        "selector": {
            "repositoryLocationName": "trance_assets",
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["tier3", "synthetic_melodies"]}],
        },
        "mode": "default",
        "executionMetadata": {"tags": []},
    }
    data = _graphql(webserver, LAUNCH, {"params": params})
    launched = data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert launched["run"]["status"] == "QUEUED"

"""examples/iot-gateway runs as its README says: real mosquitto, trioxy, paho."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_the_example_runs_devices_through_edge_and_cloud() -> None:
    result = subprocess.run(
        [sys.executable, "examples/iot-gateway/run.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    sections = result.stdout.split("\n\n")
    assert sections[1].splitlines()[1:] == [
        "    readings at the dashboard: 100",
        "    edge connections to the cloud: 2",
    ]
    assert sections[2].splitlines()[1:] == ["    devices that got it: 100"]
    assert sections[3].splitlines()[1:] == ["    will/sensor-doomed"]

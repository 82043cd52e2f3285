from __future__ import annotations

import signal
import subprocess
from dataclasses import replace

import pytest

from models.detector import Detector, DetectorOutput
from schemas.validation import validate_event
from simulator.traffic import Scenario, SimulatedTraffic, simulate

# Small enough for CI, large enough that the calibrator warms up before the campaigns start.
SMALL = replace(
    Scenario(),
    seed=11,
    minutes=30,
    benign_accounts=1_500,
    campaign_start_minute=12,
    new_model_minute=15,
)


@pytest.fixture(scope="session")
def small_traffic() -> SimulatedTraffic:
    return simulate(SMALL)


def run_detector(traffic: SimulatedTraffic, detector: Detector | None = None) -> DetectorOutput:
    det = detector or Detector()
    events = [validate_event(e) for e in traffic.events]
    out = DetectorOutput()
    for i in range(0, len(events), 10_000):
        out.extend(det.process(events[i : i + 10_000]))
    out.extend(det.flush())
    return out


@pytest.fixture(scope="session")
def small_run(small_traffic: SimulatedTraffic) -> DetectorOutput:
    return run_detector(small_traffic)


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One chDB path per test process (chDB allows one); tests isolate by database name."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 45) -> int:
    """SIGTERM a worker process and wait for it (killed if it does not stop): its exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise

"""MLflow's usage telemetry is off in every sparsealign process unless the user turns it on."""

import os
import subprocess
import sys

# MLflow also switches telemetry off by itself under pytest and CI: clear those signals so
# the child sees what a user's shell would.
NOT_A_USER_SHELL = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "DO_NOT_TRACK",
                    "MLFLOW_DISABLE_TELEMETRY"}


def _python(code: str, tmp_path, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in NOT_A_USER_SHELL}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**base, "XDG_CONFIG_HOME": str(tmp_path / "config"), **env})
    return proc.stdout.strip()


def test_importing_sparsealign_switches_mlflow_telemetry_off(tmp_path):
    out = _python("import os, sparsealign, mlflow\n"
                  "from mlflow.telemetry import get_telemetry_client\n"
                  "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], get_telemetry_client())", tmp_path)
    assert out == "true None"
    assert not (tmp_path / "config" / "mlflow" / "telemetry.json").exists()


def test_a_user_who_turns_telemetry_on_keeps_it_on(tmp_path):
    # mlflow is not imported here: with telemetry on, it would try to reach its remote host.
    out = _python("import os, sparsealign; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])", tmp_path,
                  MLFLOW_DISABLE_TELEMETRY="false")
    assert out == "false"

"""kubectl, run as a user runs it, against a given kubeconfig."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


def kubectl(
    *args: str, kubeconfig: Path, input: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run kubectl; with `check`, a non-zero exit raises KubectlError."""
    command = ["kubectl", *args]
    result = subprocess.run(
        command,
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(result.returncode, command, result.stdout, result.stderr)
    return result

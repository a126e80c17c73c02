"""How fast each operator replica answers /healthz while it is meant to be up.

A thread asks every replica in turn, a few times a second (the probe of a kubelet, a little
keener). A replica the scenario kills or freezes is taken out first (`down`) and put back
once it is ready again (`up`); a probe that was in flight across such a change is dropped,
so only the operator's own stalls count. A probe that gets no answer counts as its timeout.
"""

from __future__ import annotations

import threading
from typing import Final

from localcluster.operator import OperatorProcess

INTERVAL: Final = 0.25
TIMEOUT: Final = 3.0


class HealthProbe:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._up: dict[int, OperatorProcess] = {}
        #: Bumped at every `down`: a probe that started under another epoch is void.
        self._epoch: dict[int, int] = {}
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=TIMEOUT + 1)

    def up(self, operator: OperatorProcess) -> None:
        with self._lock:
            self._up[id(operator)] = operator

    def down(self, operator: OperatorProcess) -> None:
        with self._lock:
            self._up.pop(id(operator), None)
            self._epoch[id(operator)] = self._epoch.get(id(operator), 0) + 1

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            with self._lock:
                targets = [(key, operator, self._epoch.get(key, 0)) for key, operator in self._up.items()]
            for key, operator, epoch in targets:
                latency = operator.health_latency(timeout=TIMEOUT)
                with self._lock:
                    if key in self._up and self._epoch.get(key, 0) == epoch:
                        self.samples.append(TIMEOUT if latency is None else latency)

"""The ``serve --workers N`` supervisor: uvicorn's own, with two changes for the gateway.

- SIGHUP reloads the policy in every worker (each worker's own SIGHUP handler, the one a
  single-process gateway has) instead of uvicorn's restart of every worker, which threw
  away the workers' detector windows and linking caches, counted no reload, and answered an
  invalid policy with a traceback and "not ready in time".
- A worker that is gone (killed, crashed, retired) is marked dead for prometheus_client's
  multiprocess mode, so its ``live*`` gauges (requests in flight, breaker open) stop counting
  in ``/metrics``; a worker killed with requests in flight left them counted forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

from prometheus_client import multiprocess
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("uvicorn.error")


class Supervisor(Multiprocess):
    def handle_hup(self) -> None:
        log.info("Received SIGHUP, reloading the policy in every worker.")
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    def handle_signals(self) -> None:  # SIGTTOU retires a worker
        before = self._pids()
        super().handle_signals()
        self._mark_dead(before - self._pids())

    def keep_subprocess_alive(self) -> None:  # replaces dead or hung workers
        before = self._pids()
        super().keep_subprocess_alive()
        self._mark_dead(before - self._pids())

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._mark_dead(self._pids())

    def _pids(self) -> set[int]:
        return {process.pid for process in self.processes if process.pid is not None}

    @staticmethod
    def _mark_dead(pids: set[int]) -> None:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return
        for pid in pids:
            multiprocess.mark_process_dead(pid)

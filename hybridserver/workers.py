"""``--workers N``: N processes, each running both servers, sharing both ports.

The parent binds the HTTP socket and hands it to every worker, as uvicorn does. gRPC
cannot take a socket from outside, so the parent reserves the gRPC port with
``SO_REUSEPORT`` (resolving port 0 to a real port once, for all workers) and each worker
listens on it with ``SO_REUSEPORT`` too; the kernel spreads new connections over them.

uvicorn's own supervisor runs a plain ``uvicorn.Server`` in each worker; this one runs
:class:`~hybridserver.server.HybridServer`, so that each worker stops both protocols at
once on SIGTERM and exits 0. The supervisor sleeps until a worker exits or a signal
arrives: a worker that dies is replaced, and SIGTERM or SIGINT drains them all.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger("hybridserver.error")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _worker(config: Any, sockets: list[socket.socket]) -> None:
    from hybridserver.server import EXIT_OK, HybridServer, exit_status

    config.configure_logging()
    server = HybridServer(config)
    server.run(sockets=sockets)
    status = exit_status(server)
    if status != EXIT_OK:
        os._exit(status)


class Supervisor:
    """Runs ``config.workers`` worker processes until told to stop."""

    def __init__(self, config: Any, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.workers: list[BaseProcess] = []
        self._spawn = multiprocessing.get_context("spawn")
        self._signals: list[int] = []

    def _start_worker(self) -> BaseProcess:
        process = self._spawn.Process(target=_worker, args=(self.config, self.sockets))
        process.start()
        self.workers.append(process)
        return process

    def run(self) -> int:
        """Start the workers; return 0 once a signal has drained them all."""
        wakeup_read, wakeup_write = socket.socketpair()
        wakeup_read.setblocking(False)
        wakeup_write.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wakeup_write.fileno())
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        try:
            for _ in range(self.config.hybrid.workers):
                self._start_worker()
            logger.info(
                "Supervisor [%d] started %d workers", os.getpid(), self.config.hybrid.workers
            )
            return self._supervise(wakeup_read)
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wakeup_read.close()
            wakeup_write.close()

    def _on_signal(self, sig: int, frame: Any) -> None:
        self._signals.append(sig)

    def _supervise(self, wakeup: socket.socket) -> int:
        from hybridserver.server import EXIT_STARTUP_FAILED

        forwarded = 0
        failed = False
        while self.workers:
            ready = wait([wakeup, *(w.sentinel for w in self.workers)])
            if wakeup in ready:
                try:
                    wakeup.recv(64)
                except BlockingIOError:
                    pass
            # Every signal is passed on: the first drains the workers, a second forces them.
            while forwarded < len(self._signals):
                if forwarded == 0:
                    logger.info("Supervisor: draining %d workers", len(self.workers))
                self._forward(self._signals[forwarded])
                forwarded += 1
            for worker in [w for w in self.workers if w.exitcode is not None]:
                self.workers.remove(worker)
                worker.join()
                if self._signals:
                    failed = failed or worker.exitcode != 0
                elif worker.exitcode == EXIT_STARTUP_FAILED:
                    # A replacement would fail the same way, over and over.
                    logger.error("A worker failed to start; stopping the others")
                    self._signals.append(signal.SIGTERM)
                    self._forward(signal.SIGTERM)
                    forwarded += 1
                    failed = True
                else:
                    logger.warning(
                        "Worker [%d] died (exit code %s); starting a new one",
                        worker.pid,
                        worker.exitcode,
                    )
                    self._start_worker()
        return 1 if failed else 0

    def _forward(self, sig: int) -> None:
        for worker in self.workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, sig)

"""Test helpers: a plugin served from inside the host process.

``InProcessBackend`` runs the Python SDK's services on a unix socket in this
process and looks to the manager exactly like a started plugin, so the
manager's bookkeeping can be tested without spawning (real processes are
still what the end-to-end tests use). ``crash()`` plays a process exit.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import grpc

from .host.manager import BackendFactory
from .process.backend import ExitCallback, LogCallback, PluginBackend, StopPath
from .records import PluginRecord
from .sdk import PluginServer, ServiceRegistration, _register_standard

__all__ = ["InProcessBackend", "in_process_factory"]

_serials = itertools.count(1)


class InProcessBackend(PluginBackend):
    """A plugin whose gRPC server lives in the host; there is no process, so no pid."""

    def __init__(
        self,
        plugin: PluginServer,
        *,
        on_exit: ExitCallback | None = None,
        on_log: LogCallback | None = None,
    ) -> None:
        super().__init__(plugin.id)
        self.plugin = plugin
        self.negotiated_version = max(plugin.protocol_versions)
        self._on_exit = on_exit
        self._on_log = on_log
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._dir = tempfile.TemporaryDirectory(prefix="plughost-inproc-")
        self._returncode: int | None = None
        self._stopped: StopPath | None = None
        self.serial = next(_serials)

    @property
    def pid(self) -> int | None:
        return None

    @property
    def exited(self) -> bool:
        return self._returncode is not None

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def start(self) -> InProcessBackend:
        _register_standard(self._server, self.plugin, lambda: None)
        for register in self.plugin.services:
            register(self._server)
        address = f"unix:{Path(self._dir.name) / 'sock'}"
        self._server.add_insecure_port(address)
        self._server.start()
        self._channel = grpc.aio.insecure_channel(address)
        await asyncio.wait_for(self._channel.channel_ready(), 5)
        if self._on_log is not None:
            self._on_log(f"[INFO] in-process plugin {self.plugin_id} started", "stderr")
        return self

    def _halt(self, code: int) -> None:
        self._server.stop(grace=None)
        self._returncode = code
        self._dir.cleanup()

    def crash(self, code: int = 1, message: str = "simulated crash") -> None:
        """Behave like a process that died: log a line, stop serving, report the exit."""
        if self.exited:
            return
        if self._on_log is not None:
            self._on_log(f"[ERROR] {message}", "stderr")
        self._halt(code)
        if self._on_exit is not None:
            self._on_exit(code)

    async def stop(self) -> StopPath:
        if self._stopped is None:
            self._stopped = StopPath.ALREADY_EXITED if self.exited else StopPath.GRACEFUL
            await self._close_channel()
            if not self.exited:
                self._halt(0)
        return self._stopped

    async def kill(self) -> None:
        await self.stop()


def in_process_factory(
    services: Sequence[ServiceRegistration] = (),
    started: list[InProcessBackend] | None = None,
) -> BackendFactory:
    """A manager ``backend_factory`` that serves every plugin in-process.

    Started backends are appended to ``started`` so tests can crash them.
    """

    async def factory(
        record: PluginRecord, location: Path, on_exit: ExitCallback, on_log: LogCallback
    ) -> PluginBackend:
        plugin = PluginServer(
            id=record.id,
            version=record.meta.version,
            capabilities=record.meta.capabilities,
            services=services,
        )
        backend = await InProcessBackend(plugin, on_exit=on_exit, on_log=on_log).start()
        if started is not None:
            started.append(backend)
        return backend

    return factory

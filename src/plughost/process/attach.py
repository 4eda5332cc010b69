"""Attach to a plugin that someone else started (go-plugin's ReattachConfig).

A developer runs the plugin under a debugger; it announces its address, and
the host connects without spawning. The host never kills such a process: stop
only closes the connection. Its exit is seen through a pidfd (Linux) or by
polling, and reported like any crash of a Running plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path

import grpc
import psutil

from ..errors import PluginLoadError
from .backend import ExitCallback, PluginBackend, StopPath
from .broker import BrokerConfig

__all__ = ["AttachedBackend", "ReattachConfig", "attach"]

_POLL_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True)
class ReattachConfig:
    """Where a running plugin listens, as its handshake (or .devinfo) says."""

    pid: int
    addr: str  # socket path, or host:port
    network: str = "unix"
    protocol: str = "grpc"
    protocol_version: int = 1

    @property
    def target(self) -> str:
        return f"unix:{self.addr}" if self.network == "unix" else self.addr


class AttachedBackend(PluginBackend):
    """A plugin process the host did not start and will not kill."""

    def __init__(
        self, plugin_id: str, config: ReattachConfig, on_exit: ExitCallback | None
    ) -> None:
        super().__init__(plugin_id)
        self.config = config
        self.negotiated_version = config.protocol_version
        self._on_exit = on_exit
        self._gone = asyncio.Event()
        self._detached = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.config.pid

    @property
    def exited(self) -> bool:
        return self._gone.is_set()

    @property
    def returncode(self) -> int | None:
        return None  # not our child: its status is its parent's to read

    @property
    def address(self) -> tuple[str, str] | None:
        return self.config.network, self.config.addr

    def _broker_config(self) -> BrokerConfig:
        # A plugin started by hand puts its brokered sockets beside its main one
        # (PLUGIN_UNIX_SOCKET_DIR, or the temp dir); attaching is always plaintext.
        unix = self.config.network == "unix"
        return BrokerConfig(
            plugin_id=self.plugin_id,
            network="unix" if unix else "tcp",
            socket_dir=Path(self.config.addr).parent if unix else Path(tempfile.gettempdir()),
        )

    async def _connect(self, timeout: float) -> None:
        self._channel = grpc.aio.insecure_channel(self.config.target)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            await self._close_channel()
            raise PluginLoadError(
                f"cannot connect to the running plugin at {self.config.addr}",
                plugin_id=self.plugin_id,
                suggestions=["is the plugin still running under the debugger?"],
            ) from None
        self._watch = asyncio.create_task(
            self._watch_pid(), name=f"plughost:{self.plugin_id}:attach"
        )

    async def _watch_pid(self) -> None:
        try:
            fd = os.pidfd_open(self.config.pid)
        except (OSError, AttributeError):
            fd = None
        try:
            if fd is not None:
                loop = asyncio.get_running_loop()
                readable = asyncio.Event()
                loop.add_reader(fd, readable.set)
                try:
                    await readable.wait()
                finally:
                    loop.remove_reader(fd)
            else:
                while psutil.pid_exists(self.config.pid):
                    await asyncio.sleep(_POLL_INTERVAL)
        finally:
            if fd is not None:
                os.close(fd)
        self._gone.set()
        if not self._detached and self._on_exit is not None:
            self._on_exit(None)

    async def stop(self) -> StopPath:
        self._detached = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._close_channel()
        return StopPath.DETACHED

    async def kill(self) -> None:
        await self.stop()


async def attach(
    plugin_id: str,
    config: ReattachConfig,
    *,
    on_exit: ExitCallback | None = None,
    timeout: float = 5.0,
) -> AttachedBackend:
    """Connect to the plugin described by ``config``; PluginLoadError if it is not there."""
    if config.protocol != "grpc":
        raise PluginLoadError(
            f"cannot attach: protocol {config.protocol!r} is not grpc", plugin_id=plugin_id
        )
    if not psutil.pid_exists(config.pid):
        raise PluginLoadError(
            f"cannot attach: process {config.pid} is not running",
            plugin_id=plugin_id,
            suggestions=["start the plugin again; its .devinfo is stale"],
        )
    backend = AttachedBackend(plugin_id, config, on_exit)
    await backend._connect(timeout)
    return backend

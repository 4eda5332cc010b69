"""Health checks and crash recovery.

A crash is seen at once (the exit watcher); a hang is seen by the periodic
health check, and only ``health_misses`` consecutive misses count as one (a
single slow answer moves the plugin to Degraded, the next good one back to
Running). Recovery restarts with capped exponential backoff, a few attempts
per crash, inside a crash budget per time window; when it gives up the plugin
is Failed and the user is told exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from .attach import AttachedBackend
from .backend import PluginBackend
from .errors import PlughostError
from .events import (
    EVENT_CRASH,
    EVENT_CRASH_RECOVERY_FAILED,
    EVENT_FAILED_RETRY,
    EVENT_RECOVERED,
)
from .logs import sanitize_log_message
from .phases import ACTIVE_PHASES, Phase
from .settings import Settings

if TYPE_CHECKING:
    from .manager import PluginManager

__all__ = ["DEFAULT_CRASH_REASON", "CrashKind", "CrashRecoveryState", "HealthChecker"]

log = logging.getLogger(__name__)

DEFAULT_CRASH_REASON = "plugin process exited unexpectedly"
CRASH_LOG_LINES = 20
CrashKind = Literal["crashed", "hung"]


@dataclasses.dataclass
class CrashRecoveryState:
    """One plugin's crash bookkeeping: backoff attempts and the budget window."""

    attempts: int = 0
    crash_times: deque[float] = dataclasses.field(default_factory=deque)
    in_cycle: bool = False  # between the first crash and a stable run (or giving up)
    recovered_at: float | None = None
    misses: int = 0  # consecutive failed health checks
    task: asyncio.Task[None] | None = None
    last_crash: dict[str, Any] | None = None

    @property
    def recovering(self) -> bool:
        return self.task is not None and not self.task.done()


def describe_exit(returncode: int | None) -> dict[str, Any]:
    """Exit code or signal name, as events report them."""
    if returncode is None:
        return {"exitCode": None, "signal": None}
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return {"exitCode": None, "signal": name}
    return {"exitCode": returncode, "signal": None}


class HealthChecker:
    """Watches every Running plugin and brings crashed ones back."""

    def __init__(self, manager: PluginManager, clock: Callable[[], float] = time.monotonic) -> None:
        self._manager = manager
        self._clock = clock
        self._states: dict[str, CrashRecoveryState] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None

    # -- settings, read fresh so a changed file applies at once -----------------
    @property
    def _s(self) -> Settings:
        return self._manager.settings

    def state(self, plugin_id: str) -> CrashRecoveryState:
        return self._states.setdefault(plugin_id, CrashRecoveryState())

    # -- periodic checks ---------------------------------------------------------
    def start(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run(), name="plughost:health")
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.create_task(self._retry_failed(), name="plughost:retry")

    async def stop(self) -> None:
        """Stop checking and cancel every recovery in progress."""
        tasks = [t for t in [self._loop_task, self._retry_task] if t is not None]
        self._loop_task = self._retry_task = None
        for plugin_id in list(self._states):
            task = self._cancel_task(plugin_id)
            if task is not None:
                tasks.append(task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._s.health_interval)
            await self.check_all()

    async def _retry_failed(self) -> None:
        """Failed is not forever: with ``failed_retry_interval`` set, try again now and then."""
        while True:
            interval = self._s.failed_retry_interval
            await asyncio.sleep(interval or 60.0)
            if not interval:
                continue  # off; the setting is re-read each round
            for record in list(self._manager._records.values()):
                failed = record.phase is Phase.FAILED and record.enabled
                if failed and not self.state(record.id).recovering:
                    await self._retry_one(record.id, record.last_error)

    async def _retry_one(self, plugin_id: str, last_error: str) -> None:
        self._manager.bus.publish(
            EVENT_FAILED_RETRY, {"pluginID": plugin_id, "lastError": last_error}
        )
        try:
            await self._manager.load_plugin(plugin_id)
        except PlughostError as exc:
            log.info("slow retry of %s failed: %s", plugin_id, exc)

    async def check_all(self) -> None:
        ids = [
            r.id
            for r in self._manager._records.values()
            if r.phase in (Phase.RUNNING, Phase.DEGRADED) and not self.state(r.id).recovering
        ]
        await asyncio.gather(*(self.check_plugin(i) for i in ids), return_exceptions=True)

    async def check_plugin(self, plugin_id: str) -> bool:
        """One health check; returns whether the plugin answered SERVING in time."""
        backend = self._manager._backends.get(plugin_id)
        if backend is None:
            return True  # no process (ui-only plugin): nothing to check
        ok = await backend.healthy(self._s.health_timeout)
        if self._manager._backends.get(plugin_id) is not backend:
            return ok  # reloaded meanwhile: this answer is about an old process
        record = self._manager._records.get(plugin_id)
        if record is None:
            return ok
        st = self.state(plugin_id)
        if ok:
            st.misses = 0
            if record.phase is Phase.DEGRADED:
                self._manager._try_move(record, Phase.RUNNING, "health check answered again")
            return True
        st.misses += 1
        limit = self._s.health_misses
        reason = f"health check failed ({st.misses}/{limit})"
        if record.phase is Phase.RUNNING:
            self._manager._try_move(record, Phase.DEGRADED, reason)
        if st.misses >= limit and not isinstance(backend, AttachedBackend):
            # (An attached plugin paused in a debugger stays Degraded: it is not ours
            # to kill, and spawning a copy beside it would run the plugin twice.)
            st.misses = 0
            log.warning("plugin %s is hung: %s; restarting it", plugin_id, reason)
            await backend.kill()
            self.handle_crash(
                plugin_id, kind="hung", returncode=backend.returncode, backend=backend
            )
        return False

    # -- crashes -----------------------------------------------------------------
    def _reason(self, plugin_id: str) -> tuple[str, list[str]]:
        logs = self._manager.logs
        lines = logs.tail_lines(plugin_id, CRASH_LOG_LINES)  # already redacted
        errors = [
            e.message for e in logs.get_logs(plugin_id, CRASH_LOG_LINES) if e.level == "error"
        ]
        # A Go panic ends with goroutine dumps; the line that says why is the panic itself.
        fatal = [m for m in errors if m.startswith(("panic:", "fatal error:"))]
        chosen = (fatal or [m for m in errors if not m.startswith("goroutine ")] or [""])[-1]
        reason = sanitize_log_message(chosen) if chosen else DEFAULT_CRASH_REASON
        return reason, lines

    def _budget_left(self, st: CrashRecoveryState) -> bool:
        now = self._clock()
        st.crash_times.append(now)
        while st.crash_times and now - st.crash_times[0] > self._s.crash_window:
            st.crash_times.popleft()
        return len(st.crash_times) <= self._s.crash_budget

    def _starts_cycle(self, st: CrashRecoveryState) -> bool:
        if not st.in_cycle:
            return True
        stable = st.recovered_at is not None and (
            self._clock() - st.recovered_at >= self._s.stable_time
        )
        return stable

    def handle_crash(
        self,
        plugin_id: str,
        kind: CrashKind = "crashed",
        returncode: int | None = None,
        backend: PluginBackend | None = None,
    ) -> None:
        """React to a dead or hung plugin: report, then recover with backoff.

        ``backend`` is the instance that died; a report about an instance that
        has since been replaced (a reload won the race) is ignored.
        """
        manager = self._manager
        record = manager._records.get(plugin_id)
        st = self.state(plugin_id)
        if record is None or manager.shutting_down:
            return
        if backend is not None and manager._backends.get(plugin_id) not in (backend, None):
            return
        if st.recovering:
            if record.phase in ACTIVE_PHASES and st.task is not None:
                # The restart already succeeded and its task is finishing: this is a
                # new crash, handled as soon as that task is done.
                st.task.add_done_callback(
                    lambda _: self.handle_crash(plugin_id, kind, returncode, backend)
                )
            return
        st.misses = 0
        reason, lines = self._reason(plugin_id)
        first = self._starts_cycle(st)
        st.in_cycle, st.recovered_at, st.attempts = True, None, 0
        within_budget = self._budget_left(st)
        delay = self._delay(1)
        payload: dict[str, Any] = {
            "pluginID": plugin_id,
            "kind": kind,
            **describe_exit(returncode),
            "reason": reason,
            "lines": lines,
            "attempt": 1,
            "maxAttempts": self._s.recovery_attempts,
            "nextRetryAt": _iso_in(delay) if within_budget else None,
            "crashesInWindow": len(st.crash_times),
        }
        st.last_crash = payload
        record.last_error = reason
        if first:
            manager.bus.publish(EVENT_CRASH, payload)
        manager.logs.host_log(plugin_id, "error", f"plugin {kind}: {reason}")
        if self._rolls_back(record, reason):
            return
        if not within_budget:
            self._give_up(
                plugin_id,
                f"{reason} (crash budget of {self._s.crash_budget} "
                f"per {self._s.crash_window:g} s exhausted)",
            )
            return
        manager._try_move(record, Phase.RECOVERING, f"{kind}: {reason}", force=True)
        st.task = asyncio.create_task(
            self.handle_crash_with_backoff(plugin_id), name=f"plughost:{plugin_id}:recover"
        )

    def _rolls_back(self, record: Any, reason: str) -> bool:
        """A fresh update that crashes inside the stability window goes back, not round."""
        window = self._s.rollback_window
        updated = record.updated_at
        if not window or updated is None or time.monotonic() - updated > window:
            return False
        from .install import auto_rollback, previous_version

        if previous_version(self._manager, record.id) is None:
            return False
        why = f"version {record.meta.version} crashed {time.monotonic() - updated:.1f} s after the update: {reason}"
        self._manager._spawn(auto_rollback(self._manager, record.id, why))
        return True

    def _delay(self, attempt: int) -> float:
        s = self._s
        return float(min(s.backoff_initial * 2.0 ** (attempt - 1), s.backoff_max))

    async def handle_crash_with_backoff(self, plugin_id: str) -> None:
        """Restart attempts 1..N with waits of initial, 2x, 4x ... capped."""
        st = self.state(plugin_id)
        for attempt in range(1, self._s.recovery_attempts + 1):
            st.attempts = attempt
            await asyncio.sleep(self._delay(attempt))
            record = self._manager._records.get(plugin_id)
            if record is None or record.phase not in (Phase.RECOVERING, Phase.FAILED):
                return  # a user action took over (load, unload, uninstall): not ours now
            if await self._manager._recover_plugin(plugin_id, attempt):
                st.attempts, st.recovered_at = 0, self._clock()
                self._manager.bus.publish(
                    EVENT_RECOVERED,
                    {
                        "pluginID": plugin_id,
                        "attempt": attempt,
                        "kind": (st.last_crash or {}).get("kind", "crashed"),
                    },
                )
                return
        record = self._manager._records.get(plugin_id)
        last = record.last_error if record else ""
        self._give_up(
            plugin_id, f"recovery failed after {self._s.recovery_attempts} attempts: {last}"
        )

    def _give_up(self, plugin_id: str, reason: str) -> None:
        st = self.state(plugin_id)
        st.in_cycle, st.attempts = False, 0
        record = self._manager._records.get(plugin_id)
        if record is not None:
            record.last_error = reason
            self._manager._try_move(record, Phase.FAILED, reason, force=True)
            self._manager._schedule_persist()
        self._manager.bus.publish(
            EVENT_CRASH_RECOVERY_FAILED,
            {"pluginID": plugin_id, "reason": reason, "crash": st.last_crash},
        )

    # -- control -----------------------------------------------------------------
    def _cancel_task(self, plugin_id: str) -> asyncio.Task[None] | None:
        st = self._states.get(plugin_id)
        if st is None or st.task is None or st.task.done():
            return None
        task = st.task
        if task is asyncio.current_task():
            return None  # the recovery itself is reloading: do not cancel yourself
        task.cancel()
        st.task = None
        return task

    def cancel_recovery(self, plugin_id: str) -> None:
        """Stop a pending recovery (uninstall, unload, shutdown, user retry)."""
        self._cancel_task(plugin_id)
        st = self._states.get(plugin_id)
        if st is not None:
            st.in_cycle, st.attempts, st.misses = False, 0, 0

    def reset_budget(self, plugin_id: str) -> None:
        st = self.state(plugin_id)
        st.crash_times.clear()
        st.attempts = st.misses = 0
        st.in_cycle = False

    def is_in_crash_cycle(self, plugin_id: str) -> bool:
        st = self._states.get(plugin_id)
        if st is None:
            return False
        return st.recovering or (st.in_cycle and not self._starts_cycle(st))

    def forget(self, plugin_id: str) -> None:
        self.cancel_recovery(plugin_id)
        self._states.pop(plugin_id, None)

    async def wait_idle(self, plugin_id: str) -> None:
        """Wait for a recovery in progress to end (for shutdown and tests)."""
        st = self._states.get(plugin_id)
        if st is not None and st.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(st.task)


def _iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()

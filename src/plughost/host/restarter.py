"""The restarter: health checks, crash and hang handling, backoff and the crash budget.

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
import random
import signal
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..errors import PlughostError, PluginNotFoundError
from ..events import (
    EVENT_CRASH,
    EVENT_CRASH_RECOVERY_FAILED,
    EVENT_FAILED_RETRY,
    EVENT_RECOVERED,
    EventBus,
)
from ..logs import PluginLogManager, sanitize_log_message
from ..phases import ACTIVE_PHASES, Phase
from ..process.attach import AttachedBackend
from ..process.backend import PluginBackend
from ..settings import Settings
from ..tasks import TaskOwner
from .slot import LoadPluginOptions, PluginSlot
from .table import PluginTable

__all__ = [
    "DEFAULT_CRASH_REASON",
    "CrashInterceptor",
    "CrashKind",
    "CrashRecoveryState",
    "HealthChecker",
    "Restarter",
]

log = logging.getLogger(__name__)

DEFAULT_CRASH_REASON = "plugin process exited unexpectedly"
CRASH_LOG_LINES = 20
GIVE_UP_LINES = 10  # the last log lines a give-up shows
JITTER = 0.2  # a backoff waits up to 20 % longer, at random
CrashKind = Literal["crashed", "hung", "oom"]
CrashInterceptor = Callable[[PluginSlot, str], bool]
"""Asked first about every crash: (slot, reason) -> True when it handles the crash itself
(the installer rolls back an update that crashes soon after it was installed)."""


@dataclasses.dataclass
class CrashRecoveryState:
    """One plugin's crash bookkeeping: backoff attempts and the budget window."""

    attempts: int = 0  # restarts so far in this cycle (a crash within the window adds one)
    crash_times: deque[float] = dataclasses.field(default_factory=deque)
    in_cycle: bool = False  # from a crash until the plugin stayed Running stable_time (or gave up)
    recovered_at: float | None = None  # when the last restart reached Running
    misses: int = 0  # consecutive failed health checks
    task: asyncio.Task[Any] | None = None  # the restart in progress (backoff, then start)
    stable_task: asyncio.Task[Any] | None = None  # the wait for stable_time after a restart
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


class Restarter:
    """Watches every Running plugin and brings crashed ones back.

    Works on the plugin table alone: it listens for exits and for user actions
    that take a plugin over (which end a pending recovery), and starts its
    loops and recoveries in the host's task group.
    """

    def __init__(self, table: PluginTable, clock: Callable[[], float] = time.monotonic) -> None:
        self._table = table
        self.clock = clock
        """Monotonic seconds; tests swap in a fake one."""
        self._states: dict[str, CrashRecoveryState] = {}
        self._loop_task: asyncio.Task[Any] | None = None
        self._retry_task: asyncio.Task[Any] | None = None
        self._interceptors: list[CrashInterceptor] = []
        table.on_exit(self.on_exit)
        table.on_takeover(self.cancel_recovery)

    def add_crash_interceptor(self, interceptor: CrashInterceptor) -> None:
        self._interceptors.append(interceptor)

    # -- read from the table each time: settings apply at once, logs can be swapped ------
    @property
    def _s(self) -> Settings:
        return self._table.settings

    @property
    def _bus(self) -> EventBus:
        return self._table.bus

    @property
    def _logs(self) -> PluginLogManager:
        return self._table.logs

    @property
    def _tasks(self) -> TaskOwner:
        return self._table.tasks

    def state(self, plugin_id: str) -> CrashRecoveryState:
        return self._states.setdefault(plugin_id, CrashRecoveryState())

    # -- periodic checks ---------------------------------------------------------
    def start(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = self._tasks.spawn(self._run(), name="plughost:health")
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = self._tasks.spawn(self._retry_failed(), name="plughost:retry")

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
            for slot in self._table.slots():
                failed = slot.phase is Phase.FAILED and slot.record.enabled
                if failed and not self.state(slot.id).recovering:
                    await self._retry_one(slot.id, slot.record.last_error)

    async def _retry_one(self, plugin_id: str, last_error: str) -> None:
        self._bus.publish(EVENT_FAILED_RETRY, {"pluginID": plugin_id, "lastError": last_error})
        try:
            async with self._table.exclusive(plugin_id) as slot:
                await slot.start()
        except PlughostError as exc:
            log.info("slow retry of %s failed: %s", plugin_id, exc)

    async def check_all(self) -> None:
        ids = [
            i
            for i in self._table.ids(phases=(Phase.RUNNING, Phase.DEGRADED))
            if not self.state(i).recovering
        ]
        await asyncio.gather(*(self.check_plugin(i) for i in ids), return_exceptions=True)

    async def check_plugin(self, plugin_id: str) -> bool:
        """One health check; returns whether the plugin answered SERVING in time."""
        slot = self._table.find(plugin_id)
        backend = slot.backend if slot is not None else None
        if slot is None or backend is None:
            return True  # no process (ui-only plugin): nothing to check
        ok = await backend.healthy(self._s.health_timeout)
        if slot.backend is not backend or self._table.find(plugin_id) is not slot:
            return ok  # reloaded or removed meanwhile: this answer is about an old process
        st = self.state(plugin_id)
        if ok:
            st.misses = 0
            if slot.phase is Phase.DEGRADED:
                slot.change(Phase.RUNNING, "health check answered again")
            return True
        st.misses += 1
        limit = self._s.health_misses
        reason = f"health check failed ({st.misses}/{limit})"
        if slot.phase is Phase.RUNNING:
            slot.change(Phase.DEGRADED, reason)
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
    def on_exit(self, slot: PluginSlot, backend: PluginBackend, code: int | None) -> None:
        """A plugin's process ended on its own."""
        if self._table.closing or self._table.find(slot.id) is not slot:
            return
        if slot.phase not in ACTIVE_PHASES:
            return  # not Running yet: the start sees the exit and fails
        if isinstance(backend, AttachedBackend):
            # Someone else's process (a debugger session) ended: detach, do not respawn.
            self._tasks.spawn(self._detach_ended(slot.id), name=f"plughost:{slot.id}:detach")
            return
        log.info("plugin %s exited unexpectedly (status %s)", slot.id, code)  # the event says it
        slot.record.pid = None
        # Killed for exceeding its memory limit (process/sandbox.py): not a plain crash.
        kind: CrashKind = "oom" if getattr(backend, "oom_killed", False) else "crashed"
        self.handle_crash(slot.id, kind=kind, returncode=code, backend=backend)

    async def _detach_ended(self, plugin_id: str) -> None:
        with contextlib.suppress(PluginNotFoundError):
            async with self._table.exclusive(plugin_id, takeover=False) as slot:
                await slot.stop("attached process exited")
        await self._table.persist()

    def _reason(self, plugin_id: str) -> tuple[str, list[str]]:
        logs = self._logs
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
        now = self.clock()
        st.crash_times.append(now)
        while st.crash_times and now - st.crash_times[0] > self._s.crash_window:
            st.crash_times.popleft()
        return len(st.crash_times) <= self._s.crash_budget

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
        slot = self._table.find(plugin_id)
        st = self.state(plugin_id)
        if slot is None or self._table.closing:
            return
        record = slot.record
        if backend is not None and slot.backend not in (backend, None):
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
        _cancel(st.stable_task)  # a crash inside the stability window: the same cycle goes on
        reason, lines = self._reason(plugin_id)
        attempt = st.attempts + 1 if st.in_cycle else 1
        st.in_cycle, st.recovered_at, st.attempts = True, None, attempt
        within_budget = self._budget_left(st)
        limit = self._s.recovery_attempts
        delay = self._jittered(attempt)
        retries = within_budget and attempt <= limit
        payload: dict[str, Any] = {
            "pluginID": plugin_id,
            "kind": kind,
            **describe_exit(returncode),
            "reason": reason,
            "lines": lines,
            "attempt": attempt,
            "maxAttempts": limit,
            "nextRetryIn": round(delay, 3) if retries else None,
            "nextRetryAt": _iso_in(delay) if retries else None,
            "crashesInWindow": len(st.crash_times),
        }
        st.last_crash = payload
        record.last_error = reason
        self._bus.publish(EVENT_CRASH, payload)
        self._logs.host_log(plugin_id, "error", f"plugin {kind}: {reason}")
        if any(intercept(slot, reason) for intercept in self._interceptors):
            return
        if not within_budget:
            self._give_up(
                plugin_id,
                f"{reason} (crash budget of {self._s.crash_budget} "
                f"per {self._s.crash_window:g} s exhausted)",
            )
            return
        if attempt > limit:
            self._give_up(
                plugin_id,
                f"{reason} (crashed {attempt} times, each restart within "
                f"{self._s.stable_time:g} s of the last)",
            )
            return
        if record.phase in ACTIVE_PHASES:
            slot.change(Phase.RECOVERING, f"{kind}: {reason}")
        elif record.phase is not Phase.RECOVERING:
            # The application reported a crash (handle_plugin_crash) of a plugin that is
            # not Running: it is recovered all the same, which the table has no edge for.
            slot.force(Phase.RECOVERING, f"{kind}: {reason}")
        st.task = self._tasks.spawn(
            self.handle_crash_with_backoff(plugin_id, delay), name=f"plughost:{plugin_id}:recover"
        )

    def _delay(self, attempt: int) -> float:
        """The backoff before restart ``attempt``: initial, 2x, 4x ... capped."""
        s = self._s
        return float(min(s.backoff_initial * 2.0 ** (attempt - 1), s.backoff_max))

    def _jittered(self, attempt: int) -> float:
        """The backoff plus up to JITTER of it (so plugins crashing together spread out)."""
        base = self._delay(attempt)
        return min(base * (1.0 + random.uniform(0.0, JITTER)), max(base, self._s.backoff_max))

    async def handle_crash_with_backoff(self, plugin_id: str, delay: float) -> None:
        """Wait, restart; a start that fails is the next attempt, after a longer wait."""
        st = self.state(plugin_id)
        while True:
            await asyncio.sleep(delay)
            slot = self._table.find(plugin_id)
            if slot is None or slot.phase not in (Phase.RECOVERING, Phase.FAILED):
                return  # a user action took over (load, unload, uninstall): not ours now
            if await self._attempt(plugin_id, st.attempts):
                st.recovered_at = self.clock()
                st.stable_task = self._tasks.spawn(
                    self._await_stable(plugin_id), name=f"plughost:{plugin_id}:stable"
                )
                return
            if st.attempts >= self._s.recovery_attempts:
                break
            st.attempts += 1
            delay = self._jittered(st.attempts)
        slot = self._table.find(plugin_id)
        last = slot.record.last_error if slot else ""
        self._give_up(
            plugin_id, f"recovery failed after {self._s.recovery_attempts} attempts: {last}"
        )

    async def _await_stable(self, plugin_id: str) -> None:
        """Recovered means stable: Running for ``stable_time`` after the restart."""
        st = self.state(plugin_id)
        window = self._s.stable_time
        slot = self._table.find(plugin_id)
        backend = slot.backend if slot is not None else None
        await asyncio.sleep(window)
        slot = self._table.find(plugin_id)
        if slot is None or slot.backend is not backend or slot.phase not in ACTIVE_PHASES:
            return  # it crashed again (that cycle goes on) or a user action took over
        attempts, st.in_cycle, st.attempts = st.attempts, False, 0
        self._bus.publish(
            EVENT_RECOVERED,
            {
                "pluginID": plugin_id,
                "attempt": attempts,
                "kind": (st.last_crash or {}).get("kind", "crashed"),
                "stableFor": window,
            },
        )

    async def _attempt(self, plugin_id: str, attempt: int) -> bool:
        """One recovery attempt; True when Running again."""
        try:
            async with self._table.exclusive(plugin_id, takeover=False) as slot:
                if slot.phase not in (Phase.RECOVERING, Phase.FAILED):
                    return False
                self._logs.host_log(plugin_id, "info", f"recovery attempt {attempt}")
                # A failed attempt leaves it Recovering (more attempts may follow); the
                # restarter decides when it is Failed.
                await slot.start(LoadPluginOptions(), Phase.RECOVERING)
        except PlughostError as exc:
            log.warning("recovery attempt %d of %s failed: %s", attempt, plugin_id, exc)
            return False
        return True

    def _give_up(self, plugin_id: str, reason: str) -> None:
        st = self.state(plugin_id)
        st.in_cycle, st.attempts = False, 0
        slot = self._table.find(plugin_id)
        if slot is not None:
            slot.record.last_error = reason
            slot.change(Phase.FAILED, reason)
            self._table.persist_soon()
        lines = self._logs.tail_lines(plugin_id, GIVE_UP_LINES)
        self._bus.publish(
            EVENT_CRASH_RECOVERY_FAILED,
            {
                "pluginID": plugin_id,
                "reason": reason,
                "crash": st.last_crash,
                "lines": lines,
                "next": [
                    f"see why: plughost logs {plugin_id}",
                    f"fix it, then start it again: plughost retry {plugin_id}",
                ],
            },
        )

    # -- control -----------------------------------------------------------------
    def _cancel_task(self, plugin_id: str) -> asyncio.Task[Any] | None:
        st = self._states.get(plugin_id)
        if st is not None:
            _cancel(st.stable_task)
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
        """From a crash until the plugin has been Running stable_time (or the cycle ended)."""
        st = self._states.get(plugin_id)
        return st is not None and (st.recovering or st.in_cycle)

    def forget(self, plugin_id: str) -> None:
        self.cancel_recovery(plugin_id)
        self._states.pop(plugin_id, None)

    async def wait_idle(self, plugin_id: str) -> None:
        """Wait for a recovery in progress to end (for shutdown and tests)."""
        st = self._states.get(plugin_id)
        if st is not None and st.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(st.task)


HealthChecker = Restarter
"""The seed's name for the restarter."""


def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done() and task is not asyncio.current_task():
        task.cancel()


def _iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()

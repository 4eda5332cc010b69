"""The web dashboard: static pages at ``/ui/`` and the few JSON routes only it needs.

:func:`mount_dashboard` adds to the local service's app (``create_app`` calls
it) the hand-written pages of ``static/`` (vanilla JS modules, no build step,
nothing fetched from elsewhere) and, under ``/v1/ui/``, routes that save the
page round trips or hold what the page cannot: plugins with their last crash
and recovery attempt, a filtered event stream, marketplace detail in one
answer, and install jobs whose download progress the page polls. ``GET /v1/dev``
lists the dev servers' states when the host has a dev server manager.

``plughost ui`` serves all this on 127.0.0.1 behind a one-time sign-in link:
see :mod:`plughost.service.dashboard.serve`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ...errors import PlughostError, PluginNotFoundError, ValidationError
from ...events import EVENT_DEVSERVER_LOG, EVENT_PROCESS_LOG
from ..fields import HostPath
from ..sse import sse_stream

if TYPE_CHECKING:
    from ...host.manager import PluginManager

__all__ = ["STATIC_DIR", "InstallJob", "mount_dashboard"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_JOBS = 50
_QUIET_EVENTS = frozenset({EVENT_PROCESS_LOG, EVENT_DEVSERVER_LOG})

# Everything the pages load comes from this origin; nothing inline, nothing remote.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


class _Static(StaticFiles):
    """The dashboard's files, with a strict content security policy."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


JobState = Literal["queued", "downloading", "installing", "done", "error"]


@dataclasses.dataclass
class InstallJob:
    """One install started from the page; the page polls it for its progress."""

    id: str
    source: Literal["marketplace", "file"]
    plugin_id: str = ""
    version: str = ""
    path: str = ""
    state: JobState = "queued"
    done: int = 0
    total: int | None = None
    phase: str = ""
    last_error: str = ""
    error: dict[str, Any] | None = None
    started: float = dataclasses.field(default_factory=time.time)
    finished: float | None = None

    def progress(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        self.state = "installing" if total is not None and done >= total else "downloading"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "pluginID": self.plugin_id,
            "version": self.version,
            "path": self.path,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "phase": self.phase,
            "lastError": self.last_error,
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
        }


class InstallBody(BaseModel):
    """``{id, version?}`` installs from the marketplace, ``{path}`` a package file."""

    id: str | None = None
    version: str | None = None
    path: HostPath | None = None


def _crash_info(manager: PluginManager, plugin_id: str) -> dict[str, Any]:
    st = manager.health.state(plugin_id)
    return {
        "crash": st.last_crash,
        "recovery": {
            "recovering": st.recovering,
            "attempt": st.attempts,
            "maxAttempts": manager.settings.recovery_attempts,
            "inCycle": st.in_cycle,
        },
    }


def _permissions_view(manager: PluginManager, plugin_id: str) -> dict[str, Any]:
    """Asked, granted and held-back permissions in plain words, and how they are enforced
    (worded by the host, so the page says exactly what ``info`` and ``doctor`` say)."""
    from ...host.installer import ungranted
    from ...process.sandbox import enforcement, policy_for

    record = manager.table.get(plugin_id).record
    asked, granted = record.meta.permissions, record.granted
    policy = policy_for(
        record.meta, granted, manager.settings, manager.layout.root, manager.plugins_dir / plugin_id
    )
    return {
        "asked": asked.describe() if asked else None,
        "granted": (granted or asked).describe() if asked else None,
        "more": ungranted(record.meta, granted),
        "enforcement": enforcement(policy),
    }


def _plugin_view(manager: PluginManager, plugin_id: str) -> dict[str, Any]:
    data: dict[str, Any] = manager.get_plugin(plugin_id).to_json_dict()
    data.update(_crash_info(manager, plugin_id))
    data["permissions"] = _permissions_view(manager, plugin_id)
    return data


def _ui_router(
    manager: PluginManager,
    running: set[asyncio.Task[None]],
    closing: asyncio.Event | None,
) -> APIRouter:
    """``running`` is the service's set of install tasks (cancelled when it stops);
    ``closing`` ends the event streams when the service stops."""
    m = manager
    router = APIRouter(prefix="/v1/ui", tags=["dashboard"])
    jobs: OrderedDict[str, InstallJob] = OrderedDict()
    numbers = itertools.count(1)

    @router.get("/summary", summary="The host at a glance (for the dashboard's header)")
    async def summary() -> dict[str, Any]:
        from ... import __version__

        infos = m.list_plugins()
        return {
            "version": __version__,
            "root": str(m.layout.root),
            "plugins": len(infos),
            "running": sum(i.phase.value == "Running" for i in infos),
            "devAvailable": m.dev_server_manager is not None,
            "marketplaceConfigured": bool(m.settings.marketplace_url),
        }

    @router.get("/plugins", summary="Installed plugins with their last crash and recovery")
    async def plugins() -> list[dict[str, Any]]:
        return [_plugin_view(m, i.id) for i in m.list_plugins()]

    @router.get("/plugins/{plugin_id}", summary="One plugin with its last crash and recovery")
    async def plugin(plugin_id: str) -> dict[str, Any]:
        return _plugin_view(m, plugin_id)

    @router.get("/events", summary="Plugin events without log lines (SSE)")
    async def events() -> StreamingResponse:
        stream = m.bus.stream("plugin/*")

        async def pairs() -> AsyncIterator[tuple[str, Any]]:
            try:
                async for event in stream:
                    if event.name not in _QUIET_EVENTS:
                        yield event.name, event.to_dict()
            finally:
                stream.close()

        return StreamingResponse(
            sse_stream(pairs(), closing),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- marketplace ---------------------------------------------------------------
    @router.get("/marketplace/plugins", summary="Search the marketplace")
    async def market_search(
        q: str = Query("", max_length=200),
        category: str = Query("", max_length=100),
        sort: str = Query("", max_length=40),
    ) -> list[dict[str, Any]]:
        found = await m.search_plugins(q, category, sort)
        return [p.model_dump(mode="json", exclude={"readme"}) for p in found]

    @router.get("/marketplace/categories", summary="Marketplace categories with counts")
    async def market_categories() -> list[dict[str, Any]]:
        return [c.model_dump(mode="json") for c in await m.marketplace().list_categories()]

    @router.get(
        "/marketplace/plugins/{plugin_id}",
        summary="A marketplace plugin: readme, versions, first reviews, download statistics",
    )
    async def market_detail(plugin_id: str) -> dict[str, Any]:
        from ...registry.client import enrich

        client = m.marketplace()
        found, versions, (reviews, pages), stats, daily = await asyncio.gather(
            client.get_plugin(plugin_id),
            m.get_plugin_release_history(plugin_id),
            client.get_plugin_reviews_page(plugin_id, 1, 5),
            client.get_download_stats(plugin_id),
            client.get_daily_downloads(plugin_id, 30),
        )
        [available] = enrich([found], {i.id: i.version for i in m.list_plugins()})
        return {
            "plugin": available.model_dump(mode="json"),
            "versions": [v.model_dump(mode="json") for v in versions],
            "reviews": [r.model_dump(mode="json") for r in reviews],
            "reviewPages": pages.total_pages if pages else 1,
            "stats": stats.model_dump(mode="json"),
            "daily": [d.model_dump(mode="json") for d in daily],
        }

    @router.get("/marketplace/plugins/{plugin_id}/reviews", summary="One page of reviews")
    async def market_reviews(plugin_id: str, page: int = Query(1, ge=1)) -> dict[str, Any]:
        reviews, pages = await m.marketplace().get_plugin_reviews_page(plugin_id, page, 5)
        return {
            "reviews": [r.model_dump(mode="json") for r in reviews],
            "page": page,
            "pages": pages.total_pages if pages else 1,
        }

    # -- install jobs --------------------------------------------------------------
    async def run_job(job: InstallJob) -> None:
        try:
            if job.source == "file":
                job.state = "installing"
                meta = await m.install_plugin_from_path(job.path, progress=job.progress)
            else:
                if not job.version:
                    job.version = (await m.marketplace().get_plugin(job.plugin_id)).latest_version
                job.state = "downloading"
                meta = await m.install_plugin_version(
                    job.plugin_id, job.version, progress=job.progress
                )
            job.plugin_id, job.version = meta.id, meta.version
            info = m.get_plugin(meta.id)
            job.phase, job.last_error = info.phase.value, info.last_error
            job.state = "done"
        except PlughostError as exc:
            job.state, job.error = "error", exc.to_problem()
        except Exception as exc:
            job.state = "error"
            job.error = {"title": "Install failed", "detail": f"{type(exc).__name__}: {exc}"}
        finally:
            job.finished = time.time()

    @router.post("/install", status_code=202, summary="Start an install; poll its job")
    async def start_install(body: InstallBody) -> dict[str, Any]:
        if bool(body.path) == bool(body.id):
            raise ValidationError(
                "give either a marketplace plugin id (and optionally a version) or a path",
                title="Nothing to install",
            )
        job = InstallJob(
            id=f"job-{next(numbers)}",
            source="file" if body.path else "marketplace",
            plugin_id=body.id or "",
            version=body.version or "",
            path=body.path or "",
        )
        jobs[job.id] = job
        while len(jobs) > MAX_JOBS:
            jobs.popitem(last=False)
        task = asyncio.create_task(run_job(job), name=f"plughost:ui:{job.id}")
        running.add(task)
        task.add_done_callback(running.discard)
        return job.to_dict()

    @router.get("/jobs/{job_id}", summary="An install job's progress")
    async def get_job(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise PluginNotFoundError(f"no install job {job_id!r}", title="No such job")
        return job.to_dict()

    return router


def _dev_router(manager: PluginManager) -> APIRouter:
    """``GET /v1/dev``: dev servers' states, when the host has a dev server manager."""
    m = manager
    router = APIRouter(prefix="/v1/dev", tags=["dev"])

    def dsm() -> Any:
        found = m.dev_server_manager
        if found is None:
            raise PluginNotFoundError(
                "this host has no dev server manager",
                title="Dev mode is off",
                suggestions=["install a plugin from its source tree in dev mode"],
            )
        return found

    @router.get("", summary="Every dev server's state (empty without dev mode)")
    async def list_dev() -> list[dict[str, Any]]:
        found = m.dev_server_manager
        if found is None:
            return []
        return [s.to_dict() for s in found.list_states()]

    @router.get("/{plugin_id}", summary="One plugin's dev server state")
    async def get_dev(plugin_id: str) -> dict[str, Any]:
        manager_ = dsm()
        m.get_plugin(plugin_id)
        state: dict[str, Any] = manager_.get_state(plugin_id).to_dict()
        return state

    @router.get("/{plugin_id}/logs", summary="One plugin's dev server output")
    async def dev_logs(plugin_id: str, n: int = Query(200, ge=1, le=2000)) -> list[dict[str, Any]]:
        manager_ = dsm()
        m.get_plugin(plugin_id)
        lines: list[dict[str, Any]] = manager_.get_logs(plugin_id, n)
        return lines

    return router


def mount_dashboard(app: FastAPI, manager: PluginManager) -> None:
    """Serve the dashboard at ``/ui/`` and its JSON routes under ``/v1/ui`` and ``/v1/dev``."""
    if getattr(app.state, "plughost_dashboard", False):
        return
    app.state.plughost_dashboard = True
    if not hasattr(app.state, "install_tasks"):
        app.state.install_tasks = set()
    closing = getattr(app.state, "sse_closing", None)
    app.include_router(_ui_router(manager, app.state.install_tasks, closing))
    app.include_router(_dev_router(manager))
    app.mount("/ui", _Static(directory=STATIC_DIR, html=True), name="dashboard")

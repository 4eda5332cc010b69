"""Building a plugin from its source tree into its installed directory (dev mode).

A build has two independent halves that run in parallel: the backend (the
``dev.build`` command, or the language's default: ``go build`` for Go, a
syntax check for Python, whose ``bin/plugin`` is a launcher) and the UI
(``pnpm run build`` in ``ui/``, copied to ``assets/``). When the source
declares its own gRPC services (``proto/**/*.proto``, see ``protos``), the
backend half first regenerates their stubs if a .proto is newer than them. Outputs replace the
installed files atomically (write beside, then rename), so a running plugin
is never left with half a binary, and a failed build changes nothing.
Compiler output is parsed into {file, line, column, message} so that a
broken build says exactly where it broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import PlughostError, PluginBuildError
from ..fsutil import copy_dir
from ..metadata import METADATA_FILE, PluginMeta, load_meta
from ..store import atomic_replace, atomic_write_bytes
from ..validate import BINARY_PATH
from .protos import (
    GENERATED_GLOBS,
    GO_GENERATE,
    find_protos,
    has_grpc_tools,
    python_protoc_commands,
    stubs_stale,
)
from .toolchain import BuildOpts, hydrate_build_opts, prepare_command_with_binaries

__all__ = [
    "DEFAULT_GO_OUTPUT",
    "DEFAULT_UI_BUILD_COMMAND",
    "IGNORED_DIRS",
    "BuildError",
    "BuildPlan",
    "BuildResult",
    "Language",
    "PluginBuilder",
    "detect_language",
    "matches_watch",
    "parse_build_errors",
    "plan_build",
]

Language = Literal["go", "python", "other"]
OutputCallback = Callable[[str, str], None]
"""Called with (source, line) for each line a build prints; source is 'build' or 'ui-build'."""

DEFAULT_GO_OUTPUT = "build/bin/plugin"
DEFAULT_UI_BUILD_COMMAND = "pnpm run build"
UI_DIR = "ui"
UI_OUTPUT_DIR = "dist"
ASSETS_DIR = "assets"
IGNORED_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache",
     ".pytest_cache", ".ruff_cache", ".idea", ".vscode", "build", "dist"}
)  # fmt: skip
DEFAULT_WATCH: dict[Language, tuple[str, ...]] = {
    "go": ("*.go", "*.proto", "go.mod", "go.sum", METADATA_FILE),
    "python": ("*.py", "*.proto", METADATA_FILE),
    "other": (METADATA_FILE,),
}


# -- errors ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BuildError:
    """One place where the build broke."""

    file: str
    line: int
    column: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        col = f":{self.column}" if self.column else ""
        return f"{self.file}:{self.line}{col}: {self.message}"


# go / gcc / tsc --pretty false / eslint unix: "path:line[:col]: message"
_COLON_RE = re.compile(r"^(?P<file>[^\s:][^:\n]*?\.[A-Za-z0-9]+):(?P<line>\d+)(?::(?P<col>\d+))?:\s*(?P<msg>.+)$")  # fmt: skip
# Python tracebacks: '  File "x.py", line 3[, in f]' ... 'SyntaxError: message'
_PY_FILE_RE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_PY_EXC_RE = re.compile(r"^(?P<exc>[A-Za-z_][\w.]*(?:Error|Exception|Warning)): (?P<msg>.*)$")
_CARET_RE = re.compile(r"^(?P<pad>\s*)\^+\s*$")
# go generate's own line after a failed generator ("main.go:3: running "sh": exit status 1")
_GENERATE_RUNNING_RE = re.compile(r'^running "[^"]*": ')


def _relative(file: str, base: Path | None) -> str:
    if base is not None:
        with contextlib.suppress(ValueError):
            return str(Path(file).resolve().relative_to(base.resolve()))
    return file[2:] if file.startswith("./") else file


def _python_errors(lines: Sequence[str], base: Path | None) -> list[BuildError]:
    errors: list[BuildError] = []
    where: tuple[str, int] | None = None
    column = 0
    code_line = ""
    for line in lines:
        if m := _PY_FILE_RE.match(line):
            where, column, code_line = (m["file"], int(m["line"])), 0, ""
        elif where and (m := _CARET_RE.match(line)) and code_line:
            # The caret sits under the code line; both are indented by the traceback.
            column = len(m["pad"]) - (len(code_line) - len(code_line.lstrip())) + 1
        elif where and (m := _PY_EXC_RE.match(line.strip())):
            message = f"{m['exc']}: {m['msg']}"
            errors.append(BuildError(_relative(where[0], base), where[1], max(column, 0), message))
            where = None
        elif where and line.strip():
            code_line = line
    return errors


def parse_build_errors(output: str, base: Path | None = None) -> list[BuildError]:
    """Structured errors from compiler output (Go's ``file.go:12:5: msg``, Python tracebacks).

    File names are made relative to ``base`` when they lie inside it.
    """
    lines = output.splitlines()
    errors = _python_errors(lines, base)
    for line in lines:
        m = _COLON_RE.match(line.rstrip())
        if m and not _PY_FILE_RE.match(line):
            col = int(m["col"]) if m["col"] else 0
            errors.append(BuildError(_relative(m["file"], base), int(m["line"]), col, m["msg"]))
    return list(dict.fromkeys(errors))


def _syntax_error(exc: SyntaxError, path: Path, base: Path) -> BuildError:
    return BuildError(
        _relative(str(path), base),
        exc.lineno or 0,
        exc.offset or 0,
        f"{type(exc).__name__}: {exc.msg}",
    )


# -- planning ----------------------------------------------------------------------
def detect_language(source: Path) -> Language:
    """Go when there is a go.mod, Python when there is Python code, else other."""
    if (source / "go.mod").is_file():
        return "go"
    if (source / "plugin.py").is_file() or any(source.glob("*.py")):
        return "python"
    return "other"


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """What building one source tree means."""

    source: Path
    language: Language
    command: str | None
    """Shell command run in ``source``; None: nothing to compile."""
    output: Path
    """The built executable (or, without a command, the launcher to run)."""
    watch: tuple[str, ...]
    has_backend: bool
    has_ui: bool
    protos: tuple[Path, ...] = ()
    """The plugin's own service definitions (``proto/**/*.proto``): their stubs are
    regenerated before the build when stale (Python: grpc_tools.protoc; Go: go generate)."""
    generated: tuple[str, ...] = ()
    """Globs of files the build itself writes (the stubs): changes to them are not edits."""


def plan_build(source: Path, meta: PluginMeta) -> BuildPlan:
    """Read ``dev:`` from plugin.yaml and fill in the defaults of the language."""
    language = detect_language(source)
    dev = meta.dev
    command = dev.build if dev and dev.build else None
    if command is None and language == "go":
        package = "./pkg" if (source / "pkg").is_dir() else "."
        command = f"go build -o {DEFAULT_GO_OUTPUT} {package}"
    if dev and dev.output:
        output = source / dev.output
    elif command is not None:
        output = source / DEFAULT_GO_OUTPUT
    else:
        output = source / BINARY_PATH
    watch = tuple(dev.watch) if dev and dev.watch else DEFAULT_WATCH[language]
    protos = tuple(find_protos(source)) if language in ("go", "python") else ()
    return BuildPlan(
        source=source,
        language=language,
        command=command,
        output=output,
        watch=watch,
        has_backend=meta.has_backend_capabilities(),
        has_ui=(source / UI_DIR / "package.json").is_file(),
        protos=protos,
        generated=GENERATED_GLOBS if protos else (),
    )


def matches_watch(relative: str, globs: Iterable[str]) -> bool:
    """Does a path (relative to the source, '/'-separated) match one of the watch globs?

    A glob without '/' matches the file name at any depth (``*.go`` finds
    ``pkg/x.go``); one with '/' matches the whole relative path.
    """
    parts = relative.split("/")
    if any(part in IGNORED_DIRS for part in parts[:-1]):
        return False
    name = parts[-1]
    for glob in globs:
        glob = glob.removeprefix("./")
        target = relative if "/" in glob else name
        if fnmatch.fnmatchcase(target, glob):
            return True
    return False


# -- results -----------------------------------------------------------------------
@dataclasses.dataclass
class BuildResult:
    """The outcome of one build."""

    ok: bool
    duration: float
    """Seconds, backend and UI together (they run in parallel)."""
    errors: list[BuildError] = dataclasses.field(default_factory=list)
    output: str = ""
    error_message: str = ""
    """One line saying why the build failed (empty when ok)."""
    backend_built: bool = False
    ui_built: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "duration": round(self.duration * 1000, 1),
            "errors": [e.to_dict() for e in self.errors],
            "output": self.output,
            "error": self.error_message,
        }

    def summary(self) -> str:
        """The failure as text: the message and each parsed error on its own line."""
        if self.ok:
            return ""
        return "\n".join([self.error_message, *(str(e) for e in self.errors)])

    def error(self, plugin_id: str | None = None) -> PluginBuildError | None:
        """The failure as an exception (None when the build succeeded)."""
        if self.ok:
            return None
        return PluginBuildError(
            self.summary(),
            plugin_id=plugin_id,
            errors=[e.to_dict() for e in self.errors],
            suggestions=["fix the errors above; in dev mode the plugin rebuilds on save"],
        )


@dataclasses.dataclass
class _Step:
    ok: bool
    output: str = ""
    errors: list[BuildError] = dataclasses.field(default_factory=list)
    message: str = ""


# -- the builder -------------------------------------------------------------------
class PluginBuilder:
    """Builds plugins (the seed's PluginBuilder); one instance can build many."""

    def __init__(
        self,
        *,
        settings: Any = None,
        on_output: OutputCallback | None = None,
        ui_build_command: str | Sequence[str] = DEFAULT_UI_BUILD_COMMAND,
        timeout: float = 600.0,
    ) -> None:
        self.settings = settings
        self.on_output = on_output
        self.ui_build_command = ui_build_command
        self.timeout = timeout

    async def build(
        self,
        source: str | os.PathLike[str],
        target: str | os.PathLike[str],
        meta: PluginMeta | None = None,
        *,
        backend: bool = True,
        ui: bool | None = None,
        check: bool = False,
    ) -> BuildResult:
        """Build ``source`` and install the outputs into ``target`` (``plugins/<id>``).

        ``ui=None`` builds the UI when there is a ``ui/package.json``. With
        ``check`` a failed build raises PluginBuildError instead of returning.
        """
        started = time.monotonic()
        src, dst = Path(source), Path(target)
        try:
            meta = meta or load_meta(src)
        except PlughostError as exc:
            return BuildResult(False, time.monotonic() - started, error_message=exc.detail)
        plan = plan_build(src, meta)
        want_backend = backend and plan.has_backend
        want_ui = plan.has_ui if ui is None else ui and plan.has_ui
        steps = await asyncio.gather(
            self._backend(plan) if want_backend else _done(),
            self._ui(plan) if want_ui else _done(),
        )
        output = "".join(s.output for s in steps)
        errors = [e for s in steps for e in s.errors]
        failed = [s.message for s in steps if not s.ok]
        result = BuildResult(not failed, 0.0, errors, output, "; ".join(failed))
        if result.ok:
            try:
                await asyncio.to_thread(self._install, plan, dst, want_backend, want_ui)
                result.backend_built, result.ui_built = want_backend, want_ui
            except (OSError, PlughostError) as exc:
                detail = exc.detail if isinstance(exc, PlughostError) else str(exc)
                result.ok, result.error_message = False, f"cannot install the build: {detail}"
        result.duration = time.monotonic() - started
        if check and not result.ok:
            raise result.error(meta.id) or PluginBuildError("build failed")
        return result

    async def generate_stubs(self, plan: BuildPlan) -> None:
        """Regenerate the plugin's stale gRPC stubs in its source tree (``pack`` uses it).

        Raises PluginBuildError with protoc's errors.
        """
        if not (plan.protos and stubs_stale(plan.source, plan.language, plan.protos)):
            return
        step = await self._generate(plan)
        if not step.ok:
            raise PluginBuildError(
                f"{step.message}:\n{step.output.strip()}",
                errors=[e.to_dict() for e in step.errors],
                suggestions=["fix the .proto file named above, then pack again"],
            )

    # -- backend -------------------------------------------------------------------
    async def _backend(self, plan: BuildPlan) -> _Step:
        if plan.protos and stubs_stale(plan.source, plan.language, plan.protos):
            generated = await self._generate(plan)
            if not generated.ok:
                return generated
            step = await self._compile(plan)
            step.output = generated.output + step.output
            return step
        return await self._compile(plan)

    async def _compile(self, plan: BuildPlan) -> _Step:
        if plan.command is None:
            if plan.language == "python":
                return await asyncio.to_thread(_check_python, plan.source)
            return _Step(True)
        needs_go = plan.language == "go" and plan.command.split()[:1] == ["go"]
        try:
            opts = hydrate_build_opts(
                BuildOpts(),
                require=("go",) if needs_go else (),
                optional=("node", "pnpm") if needs_go else ("go", "node", "pnpm"),
                settings=self.settings,
            )
        except PlughostError as exc:
            return _Step(False, exc.detail + "\n", message=exc.detail)
        step = await self._run(["/bin/sh", "-c", plan.command], plan.source, opts, "build")
        if step.ok and not plan.output.is_file():
            step.ok = False
            step.message = f"the build did not produce {plan.output}"
        elif not step.ok:
            step.message = f"build command failed: {plan.command}"
        return step

    async def _generate(self, plan: BuildPlan) -> _Step:
        """Regenerate the stubs of the plugin's .proto files (protoc errors are build errors)."""
        if plan.language == "python":
            if not has_grpc_tools():
                detail = (
                    f"regenerating the stubs of {plan.protos[0].relative_to(plan.source)} "
                    f"needs grpcio-tools in {sys.executable}: pip install grpcio-tools"
                )
                return _Step(False, detail + "\n", message=detail)
            commands = python_protoc_commands(plan.source, plan.protos)
            describe = "grpc_tools.protoc"
        else:
            commands = [["/bin/sh", "-c", GO_GENERATE]]
            describe = GO_GENERATE
        try:
            opts = hydrate_build_opts(
                BuildOpts(),
                require=("go",) if plan.language == "go" else (),
                optional=(),
                settings=self.settings,
            )
        except PlughostError as exc:
            return _Step(False, exc.detail + "\n", message=exc.detail)
        outputs: list[str] = []
        for argv in commands:
            step = await self._run(argv, plan.source, opts, "build")
            outputs.append(step.output)
            if not step.ok:
                step.output = "".join(outputs)
                step.errors = [e for e in step.errors if not _GENERATE_RUNNING_RE.match(e.message)]
                step.message = f"generating the gRPC stubs failed ({describe})"
                return step
        return _Step(True, "".join(outputs))

    # -- UI --------------------------------------------------------------------------
    async def _ui(self, plan: BuildPlan) -> _Step:
        cmd = self.ui_build_command
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        try:
            opts = hydrate_build_opts(
                BuildOpts(),
                require=[t for t in ("pnpm", "node") if t == argv[0]],
                optional=("node", "pnpm"),
                settings=self.settings,
            )
        except PlughostError as exc:
            return _Step(False, exc.detail + "\n", message=exc.detail)
        if argv[0] == "pnpm" and opts.pnpm_path:
            argv[0] = opts.pnpm_path
        elif argv[0] == "node" and opts.node_path:
            argv[0] = opts.node_path
        step = await self._run(argv, plan.source / UI_DIR, opts, "ui-build")
        if not step.ok:
            step.message = f"UI build failed: {shlex.join(argv)}"
        elif not (plan.source / UI_DIR / UI_OUTPUT_DIR).is_dir():
            step.ok, step.message = False, f"the UI build did not produce {UI_DIR}/{UI_OUTPUT_DIR}/"
        return step

    # -- running -----------------------------------------------------------------------
    async def _run(self, argv: list[str], cwd: Path, opts: BuildOpts, source: str) -> _Step:
        prepared = prepare_command_with_binaries(argv[0], argv[1:], *opts.binaries(), cwd=cwd)
        # The Python that runs plugins and has grpcio-tools (for gen_stubs.sh scripts).
        prepared.env.setdefault("PLUGHOST_PYTHON", sys.executable)
        proc = await asyncio.create_subprocess_exec(
            *prepared.argv,
            cwd=prepared.cwd,
            env=prepared.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # so a cancel or timeout can end the whole tree
        )
        lines: list[str] = []

        async def pump() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace")
                lines.append(line)
                if self.on_output is not None:
                    self.on_output(source, line.rstrip("\r\n"))

        both = asyncio.gather(pump(), proc.wait())
        try:
            await asyncio.wait_for(both, self.timeout)
        except TimeoutError:
            lines.append(f"build timed out after {self.timeout:g} s\n")
        finally:
            if both.done() and not both.cancelled():
                both.exception()  # seen here: a cancelled build (Ctrl-C) is no asyncio warning
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.shield(proc.wait())
        output = "".join(lines)
        ok = proc.returncode == 0
        return _Step(ok, output, [] if ok else parse_build_errors(output, cwd))

    # -- installing the outputs ----------------------------------------------------------
    def _install(self, plan: BuildPlan, target: Path, backend: bool, ui: bool) -> None:
        target.mkdir(parents=True, exist_ok=True)
        sync_metadata(plan.source, target)
        if backend:
            if plan.command is None:
                install_launcher(plan.output, plan.source, target / BINARY_PATH)
            else:
                install_binary(plan.output, target / BINARY_PATH)
        if ui:
            install_assets(plan.source / UI_DIR / UI_OUTPUT_DIR, target / ASSETS_DIR)


async def _done() -> _Step:
    return _Step(True)


def _check_python(source: Path) -> _Step:
    """Compile every .py file (no bytecode written): a syntax error fails the build."""
    errors: list[BuildError] = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            try:
                compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
            except SyntaxError as exc:
                errors.append(_syntax_error(exc, path, source))
            except (OSError, ValueError) as exc:
                errors.append(BuildError(_relative(str(path), source), 0, 0, str(exc)))
    if not errors:
        return _Step(True)
    text = "".join(f"{e}\n" for e in errors)
    return _Step(False, text, errors, f"{len(errors)} Python file(s) do not compile")


# -- atomic file moves ---------------------------------------------------------------
def install_binary(built: Path, dest: Path) -> None:
    """Copy the built executable to ``dest`` atomically, keeping (and ensuring) exec bits."""
    mode = (built.stat().st_mode & 0o7777) | 0o111
    atomic_replace(dest, lambda tmp: shutil.copyfile(built, tmp), mode)


def launcher_script(launcher: Path, source: Path) -> str:
    """A ``bin/plugin`` that runs the source tree's own launcher (or plugin.py) in place."""
    if launcher.is_file():
        return f'#!/bin/sh\n# dev mode: run the plugin from its source tree\nexec {shlex.quote(str(launcher))} "$@"\n'
    script = shlex.quote(str(source / "plugin.py"))
    return f'#!/bin/sh\n# dev mode: run the plugin from its source tree\nexec "${{PLUGHOST_PYTHON:-python3}}" {script} "$@"\n'


def install_launcher(launcher: Path, source: Path, dest: Path) -> None:
    """Write the dev launcher to ``dest`` (only when it changed)."""
    text = launcher_script(launcher, source)
    if dest.is_file() and os.access(dest, os.X_OK) and dest.read_text(errors="replace") == text:
        return
    atomic_replace(dest, lambda tmp: tmp.write_text(text), 0o755)


def sync_metadata(source: Path, target: Path) -> PluginMeta:
    """Copy the source's plugin.yaml into ``target`` (validated; same id required)."""
    meta = load_meta(source)
    if target.name != meta.id:
        raise PluginBuildError(
            f"{source / METADATA_FILE} now says id {meta.id!r}, but the plugin is {target.name!r}",
            suggestions=["changing the id needs a new dev install"],
        )
    data = (source / METADATA_FILE).read_bytes()
    dest = target / METADATA_FILE
    if not (dest.is_file() and dest.read_bytes() == data):
        atomic_write_bytes(dest, data)
    return meta


def install_assets(built: Path, dest: Path) -> None:
    """Replace ``dest`` with a copy of ``built`` (copy beside, then swap)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        copy_dir(staging, built)
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not dest.exists():
            os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)

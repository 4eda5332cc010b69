"""Where a root lives and what is inside it (docs/concepts.md, "The root")."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .fsutil import private_dir

__all__ = ["OMNIVIEW_COOKIE_KEY", "PLUGHOST_COOKIE_KEY", "PROFILES", "RootLayout", "resolve_root"]

PLUGHOST_COOKIE_KEY = "PLUGHOST"
OMNIVIEW_COOKIE_KEY = "OMNIVIEW"
PROFILES = ("plughost", "omniview")


def resolve_root(root: str | os.PathLike[str] | None = None, profile: str | None = None) -> Path:
    """``--root`` beats ``PLUGHOST_HOME`` beats the profile's default.

    Always absolute: plugins run in their own directory, so a root relative to
    the caller's working directory would not find them.
    """
    if root:
        return Path(root).expanduser().absolute()
    env = os.environ.get("PLUGHOST_HOME")
    if env:
        return Path(env).expanduser().absolute()
    if profile == "omniview":
        return Path.home() / ".omniview"
    import platformdirs  # here: a command given --root or PLUGHOST_HOME starts faster

    return Path(platformdirs.user_data_dir("plughost", appauthor=False))


@dataclasses.dataclass(frozen=True)
class RootLayout:
    """Every path the host uses below one root."""

    root: Path

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def registry(self) -> Path:
        """The bundled local marketplace ``plughost run`` creates (registry/local.py)."""
        return self.root / "registry"

    @property
    def settings_file(self) -> Path:
        return self.root / "plughost.toml"

    @property
    def state_file(self) -> Path:
        return self.root / "plugin_state.json"

    @property
    def state_backup(self) -> Path:
        """The state before the last write (store.py), used when the state file is corrupt."""
        return self.root / "plugin_state.json.bak"

    @property
    def pid_file(self) -> Path:
        return self.root / "plugin_pids.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "host.lock"

    def plugin_dir(self, plugin_id: str) -> Path:
        return self.plugins / plugin_id

    def log_file(self, plugin_id: str) -> Path:
        return self.logs / f"{plugin_id}.log"

    def ensure(self) -> None:
        """Create the directories, private (0700) whatever the umask; tighten ours if looser.

        Only the owner may list them: the root holds plugin executables the host
        runs and files with secrets, and ``run/`` the sockets.
        """
        for directory in (self.root, self.plugins, self.logs, self.run):
            private_dir(directory)

"""Opt-in pushing of each run's version when the run's process ends (``RETROLOG_AUTO_PUSH``).

``RETROLOG_AUTO_PUSH=1`` (or ``true``/``yes``/``on``) pushes to ``origin``; any other non-empty
value except ``0``/``false``/``no``/``off`` names the remote. At interpreter exit, after the run
has been closed, one detached ``git push`` of the refs of this process's runs is started in its own
session: the training process neither waits for the network nor can fail because of it. Its
output goes to ``.retrolog/autopush.log``; the next run that auto-pushes warns once when the
previous push failed, and a missing remote is warned about at once.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
from pathlib import Path

from .._warn import warn_once
from ..project import Project
from ..settings import AUTO_PUSH
from .git import REF_PREFIX, GitRepo

ENV = AUTO_PUSH.name
LOG_NAME = "autopush.log"

_lock = threading.Lock()
_pending: dict[Path, tuple[Project, str, list[str]]] = {}
_registered = False


def configured_remote(value: str | None = None) -> str | None:
    """The remote ``RETROLOG_AUTO_PUSH`` asks for, or None when auto-push is off."""
    if value is None:
        return AUTO_PUSH.get()
    return AUTO_PUSH.parse(value)


def schedule(project: Project, run_id: str) -> None:
    """Remember to push ``run_id``'s version when this process ends (no-op when off).

    Called from the training thread when a run begins: it only checks the setting and the remote
    (one local git call) and never raises.
    """
    try:
        remote = configured_remote()
        if remote is None or not project.in_git or not GitRepo.available():
            return
        _warn_previous_failure(project)
        known = GitRepo(project.root)._out("remote").split()
        if remote not in known:
            warn_once(
                "autopush-remote",
                f"retrolog: {ENV} names the git remote {remote!r}, which this repository does "
                f"not have; versions stay local (push them later with `retrolog push REMOTE`)",
            )
            return
        global _registered
        with _lock:
            entry = _pending.setdefault(project.root, (project, remote, []))
            entry[2].append(run_id)
            if not _registered:
                _registered = True
                atexit.register(push_pending)
    except Exception as exc:  # auto-push must never hurt a run
        warn_once("autopush", f"retrolog: cannot auto-push this run's version: {exc}")


def push_pending() -> None:
    """Start one detached ``git push`` per repository for the runs scheduled in this process."""
    with _lock:
        items = list(_pending.values())
        _pending.clear()
    for project, remote, run_ids in items:
        try:
            start_push(project, remote, run_ids)
        except Exception as exc:  # noqa: BLE001 - the run is over; never turn its exit into an error
            warn_once("autopush", f"retrolog: cannot auto-push run versions: {exc}")


def start_push(project: Project, remote: str, run_ids: list[str]) -> subprocess.Popen[bytes]:
    """Start ``git push REMOTE <run refs>`` in its own session, logging to ``autopush.log``."""
    project.ensure_data_dir()
    specs = [f"{REF_PREFIX}{r}:{REF_PREFIX}{r}" for r in run_ids]
    env = dict(os.environ)
    env.pop("GIT_INDEX_FILE", None)
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password nobody will type
    log = open(project.data_dir / LOG_NAME, "wb")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            ["git", "-C", str(project.root), "push", "--quiet", "--no-verify", remote, *specs],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    finally:
        log.close()


def _warn_previous_failure(project: Project) -> None:
    log = project.data_dir / LOG_NAME
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return
    if "error" in text.lower() or "fatal" in text.lower() or "rejected" in text.lower():
        last = text.splitlines()[-1]
        warn_once(
            "autopush-failed",
            f"retrolog: the last automatic push of run versions failed ({last}); "
            "run `retrolog push` to retry",
        )


__all__ = ["ENV", "configured_remote", "push_pending", "schedule", "start_push"]

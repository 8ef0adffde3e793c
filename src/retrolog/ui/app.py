"""The FastAPI application: server-rendered pages (Jinja2 + htmx) and JSON endpoints.

Pages: ``/runs``, ``/metrics``, ``/runs/{id}``, ``/versions``, ``/replays``, ``/replays/{id}``.
JSON: the same data under ``/api/...`` (see docs/ui.md). Everything is read-only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..project import Project
from ..store import views
from ..store.runs import run_count
from . import gitinfo, queries, replays
from .data import data_view
from .db import Reader
from .formatting import FILTERS, jsonable, runs_rows
from .guard import RequestGuard
from .series import DEFAULT_RUNS, X_AXES, default_runs, metric_series

HERE = Path(__file__).resolve().parent
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
PAGE_SIZE = 100  # runs per page of the runs table
SLOW_RUNS = 200  # charting more runs than this reads ~1 M values: the page warns
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def _split(values: Sequence[str] | None, known: set[str] | None = None) -> list[str]:
    """Repeated query values, each also split on commas (unless it is itself a known name)."""
    out: list[str] = []
    for value in values or []:
        if known is not None and value in known:
            out.append(value)
            continue
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return list(dict.fromkeys(out))


def create_app(
    project: Project | str | Path | None = None, *, allowed_hosts: Sequence[str] | None = None
) -> FastAPI:
    """The UI over ``project``'s store (default: the project around the current directory).

    ``allowed_hosts`` limits the ``Host`` header (default: loopback names only), which keeps
    other web sites from reading the UI through DNS rebinding.
    """
    reader = Reader(project)
    app = FastAPI(title="retrolog", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.reader = reader
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS))

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    # Outermost: refuse other origins, and stop the queries of clients that went away.
    app.add_middleware(RequestGuard)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(FILTERS)
    templates.env.globals["project_root"] = str(reader.project.root)

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def not_found(request: Request, message: str) -> HTMLResponse:
        return page(request, "error.html", status_code=404, message=message, nav="")

    # -- pages ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/runs")

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(
        request: Request,
        where: str = "",
        sort: str = "start_time",
        desc: bool = True,
        offset: int = Query(default=0, ge=0),
        limit: int = Query(default=PAGE_SIZE, ge=0),
    ) -> HTMLResponse:
        table = queries.runs_table(reader, where)
        frame = queries.sort_runs(table["frame"], sort, desc)
        matched = len(frame)
        table["frame"] = frame.iloc[offset : offset + limit] if limit else frame.iloc[offset:]
        rows = runs_rows(table)

        def link(**changes: Any) -> str:
            params = {"where": where, "sort": sort, "desc": int(desc), "offset": offset}
            params.update({"limit": limit, **changes})
            return "/runs?" + urlencode({k: v for k, v in params.items() if v != ""})

        return page(
            request,
            "runs.html",
            nav="runs",
            where=where,
            t=table,
            rows=rows,
            sort=sort,
            desc=desc,
            matched=matched,
            offset=offset,
            limit=limit,
            link=link,
        )

    @app.get("/metrics", response_class=HTMLResponse)
    def metrics_page(
        request: Request,
        names: list[str] = Query(default=[]),
        runs: list[str] = Query(default=[]),
        where: str = "",
        x: str = "step",
        group: str = "run",
        smooth: float = 0.0,
    ) -> HTMLResponse:
        all_names = queries.numeric_names(reader)
        chosen = [n for n in _split(names, set(all_names)) if n in set(all_names)]
        if not chosen and all_names:
            chosen = [all_names[0]]
        run_ids, note, error = _select_runs(reader, chosen, _split(runs), where)
        arg_names = views.arg_names(reader)
        return page(
            request,
            "metrics.html",
            nav="metrics",
            all_names=all_names,
            names=chosen,
            run_ids=run_ids,
            explicit_runs=_split(runs),
            where=where,
            x=x if x in X_AXES else "step",
            group=group,
            groups=["run", "version", "status", *[f"arg:{a}" for a in arg_names]],
            smooth=max(0.0, min(smooth, 0.99)),
            note=note,
            error=error,
        )

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(
        request: Request,
        run_id: str,
        against: str = "HEAD",
        env_against: str = "",
        data_against: str = "",
    ) -> HTMLResponse:
        try:
            report = queries.run_detail(reader, run_id)
        except LookupError as exc:
            return not_found(request, str(exc))
        from .labels import environment_view  # the environment card and its diff to another run

        env = environment_view(reader, report, env_against)
        others = _diff_targets(reader, report)
        diff = _run_diff(reader, report, against, others)
        numeric = [m["name"] for m in report["metrics"] if _is_number(m.get("last"))]
        return page(
            request,
            "run.html",
            nav="runs",
            r=report,
            others=others,
            diff=diff,
            chart_names=numeric[:24],
            env=env,
            data=data_view(reader, report["run_id"], data_against),  # ui/data.py
        )

    @app.get("/runs/{run_id}/data-diff", response_class=HTMLResponse)
    def run_data_diff(request: Request, run_id: str, data_against: str = "") -> HTMLResponse:
        """The data versions of this run against another run's (``_data_diff.html``)."""
        try:
            found = queries.run_keys(reader, [run_id])
        except LookupError as exc:
            return not_found(request, str(exc))
        if not found:
            return not_found(request, f"no run {run_id}")
        return page(request, "_data_diff.html", data=data_view(reader, run_id, data_against))

    @app.get("/runs/{run_id}/diff", response_class=HTMLResponse)
    def run_diff_fragment(request: Request, run_id: str, against: str = "HEAD") -> HTMLResponse:
        try:
            report = queries.run_detail(reader, run_id)
        except LookupError as exc:
            return not_found(request, str(exc))
        diff = _run_diff(reader, report, against, _diff_targets(reader, report))
        return page(request, "_diff.html", diff=diff)

    @app.get("/diff", response_class=HTMLResponse)
    def diff_fragment(request: Request, a: str, b: str = "HEAD") -> HTMLResponse:
        known = queries.known_versions(reader) | {"HEAD"}
        if a in known and b in known:
            diff = _diff_view(reader, a, b)
        else:
            diff = _no_diff(a, b, "not a version of this project")
        return page(request, "_diff.html", diff=diff)

    @app.get("/versions", response_class=HTMLResponse)
    def versions_page(request: Request) -> HTMLResponse:
        versions = _versions(reader)
        return page(request, "versions.html", nav="versions", versions=versions)

    @app.get("/replays", response_class=HTMLResponse)
    def replays_page(request: Request) -> HTMLResponse:
        listing = replays.replays_list(reader)
        return page(request, "replays.html", nav="replays", replays=listing)

    @app.get("/replays/live", response_class=HTMLResponse)
    def replays_live(request: Request) -> HTMLResponse:
        return page(request, "_replays_table.html", replays=replays.replays_list(reader))

    @app.get("/replays/{replay_id}", response_class=HTMLResponse)
    def replay_page(request: Request, replay_id: str) -> HTMLResponse:
        try:
            replay = replays.replay_detail(reader, replay_id)
        except LookupError as exc:
            return not_found(request, str(exc))
        return page(request, "replay.html", nav="replays", rp=replay)

    @app.get("/replays/{replay_id}/live", response_class=HTMLResponse)
    def replay_live(request: Request, replay_id: str) -> HTMLResponse:
        try:
            replay = replays.replay_detail(reader, replay_id)
        except LookupError as exc:
            return not_found(request, str(exc))
        return page(request, "_replay_live.html", rp=replay)

    # -- JSON ----------------------------------------------------------------------------
    @app.get("/api/runs")
    def api_runs(
        where: str = "",
        sort: str = "run_id",
        desc: bool = False,
        offset: int = Query(default=0, ge=0),
        limit: int = Query(default=0, ge=0),
    ) -> JSONResponse:
        table = queries.runs_table(reader, where)
        if table["error"]:
            raise HTTPException(400, table["error"])
        frame = queries.sort_runs(table["frame"], sort, desc)
        frame = frame.iloc[offset : offset + limit] if limit else frame.iloc[offset:]
        out = []
        for record in frame.to_dict(orient="records"):
            out.append(
                {
                    **{k: record.get(k) for k in queries.FACT_COLUMNS},
                    "tags": {  # tag_<key> columns (relational/labels.py)
                        str(k)[4:]: v
                        for k, v in record.items()
                        if str(k).startswith("tag_") and isinstance(v, str)
                    },
                    "args": _present(record, table["args"]),
                    "last": _present(record, table["metrics"]),
                }
            )
        body = {"count": len(out), "matched": len(table["frame"]), "total": table["total"]}
        body["args"] = table["args"]
        body.update(metrics=table["metrics"], runs=out)
        return JSONResponse(jsonable(body))

    @app.get("/api/names")
    def api_names() -> JSONResponse:
        return JSONResponse(
            {"names": queries.metric_names(reader), "numeric": queries.numeric_names(reader)}
        )

    @app.get("/api/metrics")
    def api_metrics(
        names: list[str] = Query(default=[]),
        runs: list[str] = Query(default=[]),
        where: str = "",
        x: str = "step",
        max_points: int = Query(default=1000, ge=4, le=100_000),
        method: str = Query(default="minmax", pattern="^(minmax|lttb)$"),
        group: str = "run",
    ) -> JSONResponse:
        if x not in X_AXES:
            raise HTTPException(400, f"x must be one of {', '.join(X_AXES)}")
        known = set(queries.metric_names(reader))
        chosen = [n for n in _split(names, known) if n in known]
        run_ids, note, error = _select_runs(reader, chosen, _split(runs), where)
        if error:
            raise HTTPException(400, error)
        data = metric_series(reader, chosen, run_ids, x, max_points, method, group)
        series = data.pop("series")  # plain finite floats already: skip the slow walk
        body = jsonable({**data, "note": note})
        body["series"] = series
        return JSONResponse(body)

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> JSONResponse:
        try:
            report = queries.run_detail(reader, run_id)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        return JSONResponse(jsonable(report))

    @app.get("/api/runs/{run_id}/diff")
    def api_run_diff(run_id: str, against: str = "HEAD") -> JSONResponse:
        try:
            report = queries.run_detail(reader, run_id)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        view = _run_diff(reader, report, against, _diff_targets(reader, report))
        return JSONResponse(jsonable({k: view[k] for k in DIFF_KEYS}))

    @app.get("/api/versions")
    def api_versions() -> JSONResponse:
        return JSONResponse(jsonable({"versions": _versions(reader)}))

    @app.get("/api/replays")
    def api_replays() -> JSONResponse:
        return JSONResponse(jsonable({"replays": replays.replays_list(reader)}))

    @app.get("/api/replays/{replay_id}")
    def api_replay(replay_id: str) -> JSONResponse:
        try:
            replay = replays.replay_detail(reader, replay_id)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        return JSONResponse(jsonable(replay))

    return app


def _present(record: dict[Any, Any], columns: list[str]) -> dict[str, Any]:
    """The cells of ``columns`` that hold a value (the run has that arg / logged that name)."""
    out = {}
    for column in columns:
        value = record.get(column)
        if value is None or (isinstance(value, float) and value != value):
            continue
        out[column] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _select_runs(
    reader: Reader, names: list[str], runs: list[str], where: str
) -> tuple[list[str], str | None, str | None]:
    """(run ids to plot, a note for the user, an error): explicit ids, a filter, or the newest."""
    if runs or where.strip():
        if runs:
            known = queries.run_keys(reader, runs)
            missing = [r for r in runs if r not in known]
            note = f"unknown runs left out: {', '.join(missing)}" if missing else None
            chosen = [r for r in runs if r in known]
        else:
            table = queries.runs_table(reader, where)
            if table["error"]:
                return [], None, table["error"]
            note, chosen = None, list(table["frame"]["run_id"])
        if len(chosen) > SLOW_RUNS:
            slow = f"{len(chosen)} runs: reading all their values takes a while (seconds)"
            note = f"{note}; {slow}" if note else slow
        return chosen, note, None
    chosen = default_runs(reader, names, DEFAULT_RUNS)
    total = run_count(reader)
    note = None
    if total > len(chosen) and len(chosen) == DEFAULT_RUNS:
        note = (
            f"showing the {DEFAULT_RUNS} newest runs that logged these names; select runs on the "
            "Runs page or filter them here to see others"
        )
    return chosen, note, None


def _diff_targets(reader: Reader, report: dict[str, Any]) -> list[dict[str, Any]]:
    """What a run's version can be compared with: HEAD, then the other versions, newest first."""
    targets: list[dict[str, Any]] = [{"value": "HEAD", "label": "current HEAD"}]
    seen = {report.get("version")}
    for entry in reversed(queries.versions_list(reader)):
        version = entry["version"]
        if version and version not in seen:
            seen.add(version)
            first = entry["runs"][0]["run_id"]
            label = f"{version[:10]} (run {first}, {len(entry['runs'])} runs)"
            targets.append({"value": version, "label": label})
    return targets


DIFF_KEYS = ("base", "target", "text", "note", "files")


def _no_diff(base: str | None, target: str | None, note: str) -> dict[str, Any]:
    return {
        "base": base,
        "target": target,
        "text": None,
        "lines": [],
        "files": [],
        "cut": False,
        "note": note,
    }


def _run_diff(
    reader: Reader, report: dict[str, Any], against: str, allowed: list[dict[str, Any]]
) -> dict[str, Any]:
    """The diff from ``against`` (HEAD or another run's version) to this run's version."""
    version = report.get("version")
    if not version:
        return _no_diff(against, None, "this run has no code version (recorded outside git)")
    if against not in {t["value"] for t in allowed} and against != version:
        return _no_diff(against, version, f"{against!r} is not a version of this project")
    return _diff_view(reader, against, version)


def _diff_view(reader: Reader, base: str, target: str) -> dict[str, Any]:
    """The unified diff from ``base`` to ``target`` (both already validated), ready to show."""
    text, note = gitinfo.diff(reader.project, base, target)
    view = _no_diff(base, target, note or "")
    view["text"] = text
    if text is not None:
        view["lines"], view["cut"] = gitinfo.diff_lines(text)
        view["files"] = gitinfo.diff_files(text)
        view["note"] = None if text else "the code is identical"
    return view


def _versions(reader: Reader) -> list[dict[str, Any]]:
    versions = queries.versions_list(reader)
    info = gitinfo.commit_info(reader.project, [v["version"] for v in versions if v["version"]])
    head = gitinfo.head(reader.project)
    previous = None
    for entry in versions:
        entry["commit"] = info.get(entry["version"] or "")
        # a snapshot: retrolog's own commit of uncommitted code, not the user's HEAD
        entry["snapshot"] = bool(entry["version"]) and entry["version"] not in entry["heads"]
        entry["is_head"] = bool(head and entry["version"] == head)
        entry["previous"] = previous
        if entry["version"]:
            previous = entry["version"]
    return versions

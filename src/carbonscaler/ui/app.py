"""The dashboard as a FastAPI app: server-rendered pages, a small JSON API, packaged assets.

Pages (Jinja2, ``ui/templates``) carry their whole state in the URL query, so a link
reproduces a view. The what-if page fetches its results from ``/api/advisor/stream``, which
sends the sweep's progress as it runs and then the rendered results (newline-delimited JSON);
leaving the page or pressing *Cancel* closes that request, and the sweep stops at its next
policy. The cluster page does the same with ``/api/cluster/stream`` (a generated stream of
jobs sharing a capacity, each policy simulated in turn). The jobs pages poll
``/api/jobs/...`` once a second while a run is live.

Every asset (scripts, styles, Swagger UI for ``/docs``) is served from the package, and the
pages' Content-Security-Policy allows nothing else. Input errors get a 4xx that says what is
wrong: a page with the form and the problems for the pages, ``{"detail": ...}`` for the API.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup

from carbonscaler.forecast_names import FORECAST_MODELS
from carbonscaler.planner.names import POLICIES
from carbonscaler.services._app import service_app
from carbonscaler.ui.advisor import (
    AdvisorQuery,
    QueryError,
    SweepCache,
    SweepCancelled,
    build_spec,
    parse_query,
    results_view,
    schedule_view,
    warm_up,
)
from carbonscaler.ui.catalog import (
    MAX_INLINE_PROFILE_CHARS,
    PROFILE_PRESETS,
    Catalog,
    UnknownNameError,
    inline_profile,
)
from carbonscaler.ui.cluster import (
    MAX_JOBS,
    ClusterCache,
    ClusterQuery,
    PreparedCluster,
    cluster_view,
    parse_cluster_query,
    prepare_cluster,
)
from carbonscaler.ui.jobs import REPORT_FILES, find_run, list_runs, run_summary, run_view

__all__ = ["API_DESCRIPTION", "DashboardConfig", "create_app"]

log = logging.getLogger("carbonscaler.ui")

UI_DIR = Path(__file__).resolve().parent
MAX_PROFILE_UPLOAD_BYTES = 8 * 1024
"""Largest profile CSV accepted (about 300 server counts); its rows must also fit in a link
(:data:`~carbonscaler.ui.catalog.MAX_INLINE_PROFILE_CHARS`)."""
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""Pages load nothing from anywhere else (and run no inline script)."""

API_DESCRIPTION = """\
The dashboard's data: CarbonAdvisor's what-if summary for a query (the same numbers as
`carbonscaler advise --json`), its progress as it runs, one run's schedule, the traces and
profiles on offer, and the local runtime's runs as the jobs pages show them.

Queries use the what-if page's URL parameters: `trace` (repeat to compare), `profile`,
`length` (hours at `min` servers), `slack` (deadline = slack × length), `min`, `max`,
`forecast`, `error`, `overhead` (seconds per rescale), `starts` (`all` or a number). The
cluster endpoints (`carbonscaler advise-cluster --generate N --json`) take the cluster page's
parameters, listed with them. Every endpoint only reads: nothing here changes a run or a file.
"""


@dataclass(frozen=True)
class DashboardConfig:
    """What the dashboard serves; the CLI builds one from its options.

    Args:
        trace_folders: folders whose CSV files are offered as traces (by file stem).
        runs: the local runtime's run folders (``carbonscaler run`` checkpoint dirs).
        profile_folders: folders whose CSV files are offered as profiles (by file stem).
        dataset: offer the offline dataset's zone-years as traces.
        warm_up: run a tiny sweep at start-up in the background, so that the first query
            does not wait for the compiled kernels.
    """

    trace_folders: tuple[Path, ...] = ()
    runs: Path = Path("runs")
    profile_folders: tuple[Path, ...] = ()
    dataset: bool = True
    warm_up: bool = True


class _Problem(Exception):
    """An input error to show: its status and what is wrong."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


def _user_error_types() -> tuple[type[Exception], ...]:
    """The library's errors that describe the user's input, not a bug here."""
    from carbonscaler.datasets import DatasetError
    from carbonscaler.forecast_names import ForecastError
    from carbonscaler.planner.model import PlanningError
    from carbonscaler.profile import ProfileError
    from carbonscaler.trace import TraceError

    return (PlanningError, ProfileError, TraceError, DatasetError, ForecastError, ValueError)


def _as_problem(exc: Exception) -> _Problem | None:
    """The 4xx an exception stands for, or None if it is not the user's input."""
    if isinstance(exc, _Problem):
        return exc
    if isinstance(exc, QueryError):
        return _Problem(422, exc.problems)
    if isinstance(exc, UnknownNameError | FileNotFoundError):
        return _Problem(404, [str(exc)])
    if isinstance(exc, _user_error_types()):
        return _Problem(422, [str(exc)])
    return None


def _user_problem(exc: Exception) -> _Problem:
    """The 4xx an exception stands for; an exception that is not the user's input goes on."""
    problem = _as_problem(exc)
    if problem is None:
        raise exc
    return problem


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(UI_DIR / "templates"),
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def create_app(config: DashboardConfig) -> FastAPI:
    """The dashboard app.

    Args:
        config: what it serves.
    """
    catalog = Catalog(config.trace_folders, config.profile_folders, dataset=config.dataset)
    cache = SweepCache()
    cluster_cache = ClusterCache()
    templates = _environment()
    templates.globals["policies"] = POLICIES

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if config.warm_up:

            def warm() -> None:
                try:
                    log.info("kernels warm in %.1f s", warm_up())
                except Exception:  # a failed warm-up only costs the first query time
                    log.exception("warm-up failed")

            threading.Thread(target=warm, name="dashboard-warm-up", daemon=True).start()
        yield

    app = service_app(
        "carbonscaler dashboard",
        API_DESCRIPTION,
        lifespan,
        max_body_bytes=MAX_PROFILE_UPLOAD_BYTES + 4096,
    )
    app.mount("/static", StaticFiles(directory=UI_DIR / "static"), name="static")

    @app.middleware("http")
    async def content_security(request: Request, call_next: Callable[..., Any]) -> Response:
        response: Response = await call_next(request)
        if not request.url.path.startswith("/docs"):  # Swagger UI runs an inline script
            response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status)

    def api_error(exc: Exception) -> JSONResponse:
        """The JSON answer to an error in the user's input; any other error propagates."""
        problem = _user_problem(exc)
        detail: Any = problem.problems[0] if len(problem.problems) == 1 else problem.problems
        return JSONResponse({"detail": detail}, status_code=problem.status)

    def query_of(request: Request) -> AdvisorQuery:
        params: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            params.setdefault(key, []).append(value)
        return parse_query(params, catalog.default_trace())

    async def prepared(request: Request) -> tuple[AdvisorQuery, Any, dict[str, str]]:
        query = query_of(request)
        spec, names = await run_in_threadpool(build_spec, query, catalog)
        return query, spec, names

    # -- pages -----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/advisor", status_code=307)

    @app.get("/healthz", tags=["health"], summary="Whether the dashboard answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def form_context(request: Request, query: AdvisorQuery | None) -> dict[str, Any]:
        # The form shows what the URL says, even where it is wrong, so it can be corrected.
        defaults = AdvisorQuery(traces=())
        values: dict[str, Any] = dict(defaults.params())
        values.update({key: value for key, value in request.query_params.items()})
        given = request.query_params.getlist("trace")
        default = catalog.default_trace()
        values["trace"] = given or ([default] if default else [])
        return {
            "query": query,
            "values": values,
            "traces": catalog.traces(),
            "presets": PROFILE_PRESETS,
            "profile_files": catalog.profiles(),
            "forecasts": FORECAST_MODELS,
            "upload_limit": MAX_PROFILE_UPLOAD_BYTES,
        }

    @app.get("/advisor", include_in_schema=False, response_class=HTMLResponse)
    async def advisor_page(request: Request) -> HTMLResponse:
        query: AdvisorQuery | None = None
        try:
            query, _, _ = await prepared(request)
        except Exception as exc:
            problem = _user_problem(exc)
            return page(
                "advisor.html.j2",
                problem.status,
                problems=problem.problems,
                command="",
                **form_context(request, query),
            )
        return page(
            "advisor.html.j2",
            problems=[],
            command=" ".join(_quote(a) for a in query.cli_args(catalog)),
            **form_context(request, query),
        )

    @app.get("/jobs", include_in_schema=False, response_class=HTMLResponse)
    async def jobs_page() -> HTMLResponse:
        runs = await run_in_threadpool(lambda: [run_summary(r) for r in list_runs(config.runs)])
        return page("jobs.html.j2", runs=runs, folder=str(config.runs))

    FolderParam = Annotated[str, PathParam(max_length=256)]
    NameParam = Annotated[str, PathParam(max_length=256)]

    @app.get("/jobs/live", include_in_schema=False)
    async def jobs_live() -> JSONResponse:
        runs = await run_in_threadpool(lambda: [run_summary(r) for r in list_runs(config.runs)])
        return JSONResponse({"html": templates.get_template("_runs.html.j2").render(runs=runs)})

    @app.get("/jobs/{folder}/{name}", include_in_schema=False, response_class=HTMLResponse)
    async def run_page(folder: FolderParam, name: NameParam) -> HTMLResponse:
        try:
            ref = find_run(config.runs, folder, name)
        except UnknownNameError as exc:
            return page("error.html.j2", 404, title="No such run", problems=[str(exc)])
        view = await run_in_threadpool(run_view, ref)
        return page("run.html.j2", run=view, data=_script_json(view))

    @app.get("/jobs/{folder}/{name}/live", include_in_schema=False)
    async def run_live(folder: FolderParam, name: NameParam) -> JSONResponse:
        try:
            ref = await run_in_threadpool(find_run, config.runs, folder, name)
        except UnknownNameError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        view = await run_in_threadpool(run_view, ref)
        # The page's two live parts, rendered by the same macros as the page itself.
        parts: Any = templates.get_template("_run.html.j2").make_module()
        return JSONResponse(
            {"summary": str(parts.summary(view)), "details": str(parts.details(view)), "view": view}
        )

    @app.get("/jobs/{folder}/{name}/{file}", include_in_schema=False)
    async def run_file(folder: FolderParam, name: NameParam, file: str) -> Response:
        if file not in REPORT_FILES:
            raise HTTPException(404, f"a run offers only {', '.join(REPORT_FILES)}")
        try:
            ref = find_run(config.runs, folder, name)
        except UnknownNameError as exc:
            raise HTTPException(404, str(exc)) from None
        path = ref.path / file
        if not path.is_file():
            raise HTTPException(404, f"run {name!r} has no {file} (yet)")
        return FileResponse(path)

    # -- the API: what-if --------------------------------------------------------------------

    @app.get(
        "/api/advisor",
        tags=["what-if"],
        summary="The what-if summary for a query (carbonscaler advise --json)",
        responses={404: {"description": "Unknown trace"}, 422: {"description": "Bad input"}},
    )
    async def advisor_api(request: Request) -> JSONResponse:
        try:
            query, spec, _ = await prepared(request)
            result = await run_in_threadpool(
                cache.run, query.sweep_key(), spec, _ignore, threading.Event()
            )
        except Exception as exc:
            return api_error(exc)
        from carbonscaler.advisor import summary_records
        from carbonscaler.advisor.report import headline

        return JSONResponse(
            {
                "query": dict(query.params()),
                "command": query.cli_args(catalog),
                "headline": headline(result),
                "summary": summary_records(result),
            }
        )

    @app.get(
        "/api/advisor/stream",
        tags=["what-if"],
        summary="The what-if results with progress (newline-delimited JSON)",
        description='Lines of `{"event": "progress", "done", "total", "label"}`, then'
        ' one `{"event": "result", ...}` or `{"event": "error", "status", "detail"}`.'
        " Closing the request cancels the sweep before its next policy.",
        responses={404: {"description": "Unknown trace"}, 422: {"description": "Bad input"}},
    )
    async def advisor_stream(request: Request) -> Response:
        try:
            query, spec, names = await prepared(request)
        except Exception as exc:
            return api_error(exc)

        def work(progress: ProgressFn, cancelled: threading.Event) -> dict[str, Any]:
            result = cache.run(query.sweep_key(), spec, progress, cancelled)
            view = results_view(result, query, names)
            html = templates.get_template("_results.html.j2").render(
                view=view, query=query, link=_link(query)
            )
            return {
                "event": "result",
                "html": html,
                "charts": view["charts"],
                "focus": view["focus"],
            }

        return _streamed(work)

    @app.get(
        "/api/advisor/schedule",
        tags=["what-if"],
        summary="One run's servers per slot over the carbon curve",
        description="The what-if query's parameters, with `focus` (the trace), `show` (the"
        " policy) and `start` (ISO 8601; the sweep's nearest start is used; default the median"
        " run).",
        responses={404: {"description": "Unknown trace"}, 422: {"description": "Bad input"}},
    )
    async def advisor_schedule(request: Request) -> JSONResponse:
        try:
            query, spec, names = await prepared(request)
            result = await run_in_threadpool(
                cache.run, query.sweep_key(), spec, _ignore, threading.Event()
            )
            view = await run_in_threadpool(schedule_view, result, query, names)
        except Exception as exc:
            return api_error(exc)
        return JSONResponse(view)

    # -- the cluster page and its API ----------------------------------------------------------

    def cluster_query_of(request: Request) -> ClusterQuery:
        params: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            params.setdefault(key, []).append(value)
        return parse_cluster_query(params, catalog.default_trace())

    async def cluster_prepared(request: Request) -> tuple[ClusterQuery, PreparedCluster]:
        query = cluster_query_of(request)
        prepared = await run_in_threadpool(prepare_cluster, query, catalog)
        return query, prepared

    def cluster_form(request: Request) -> dict[str, Any]:
        values: dict[str, Any] = dict(ClusterQuery(trace="").params())
        values["trace"] = catalog.default_trace() or ""
        values.update({key: value for key, value in request.query_params.items()})
        return {
            "values": values,
            "traces": catalog.traces(),
            "presets": PROFILE_PRESETS,
            "profile_files": catalog.profiles(),
            "forecasts": FORECAST_MODELS,
            "max_jobs": MAX_JOBS,
        }

    @app.get("/cluster", include_in_schema=False, response_class=HTMLResponse)
    async def cluster_page(request: Request) -> HTMLResponse:
        try:
            query, prepared = await cluster_prepared(request)
        except Exception as exc:
            problem = _user_problem(exc)
            return page(
                "cluster.html.j2",
                problem.status,
                problems=problem.problems,
                command="",
                ready=False,
                **cluster_form(request),
            )
        form = cluster_form(request)
        form["values"]["start"] = prepared.start_text
        return page(
            "cluster.html.j2",
            problems=[],
            command=" ".join(_quote(a) for a in query.cli_args(catalog, prepared.start_text)),
            ready=True,
            **form,
        )

    @app.get(
        "/api/cluster",
        tags=["cluster"],
        summary="A shared cluster's what-if (carbonscaler advise-cluster --generate --json)",
        description="Parameters: `trace`, `start` (ISO 8601; default a week into the trace),"
        f" `jobs` (at most {MAX_JOBS}), `rate` (arrivals per hour), `shortest`/`longest`"
        " (hours at `min` servers), `slack`, `min`, `max`, `profile` (a shape or a profile"
        " file offered), `capacity` (servers per slot), `forecast`, `error`, `overhead`"
        " (seconds per rescale), `seed`, and `show` (the policy whose jobs the chart shows).",
        responses={404: {"description": "Unknown trace"}, 422: {"description": "Bad input"}},
    )
    async def cluster_api(request: Request) -> JSONResponse:
        try:
            query, prepared = await cluster_prepared(request)
            outcomes = await run_in_threadpool(
                cluster_cache.run, query, prepared, _ignore, threading.Event()
            )
            view = await run_in_threadpool(cluster_view, outcomes, prepared, query)
        except Exception as exc:
            return api_error(exc)
        return JSONResponse(
            {
                "query": dict(query.params()),
                "command": query.cli_args(catalog, prepared.start_text),
                "trace": prepared.source,
                "zone": prepared.zone,
                "start": prepared.start.isoformat(),
                "capacity": query.capacity,
                "jobs": query.jobs,
                "headline": view["headline"],
                "summary": view["summary"],
                "charts": view["charts"],
            }
        )

    @app.get(
        "/api/cluster/stream",
        tags=["cluster"],
        summary="The cluster what-if with progress (newline-delimited JSON)",
        description='Lines of `{"event": "progress", "done", "total", "label"}`, then one'
        ' `{"event": "result", ...}` or `{"event": "error", "status", "detail"}`. Closing the'
        " request cancels the simulations before the next policy.",
        responses={404: {"description": "Unknown trace"}, 422: {"description": "Bad input"}},
    )
    async def cluster_stream(request: Request) -> Response:
        try:
            query, prepared = await cluster_prepared(request)
        except Exception as exc:
            return api_error(exc)

        def work(progress: ProgressFn, cancelled: threading.Event) -> dict[str, Any]:
            outcomes = cluster_cache.run(query, prepared, progress, cancelled)
            view = cluster_view(outcomes, prepared, query)
            html = templates.get_template("_cluster_results.html.j2").render(
                view=view, query=query, link="/cluster?" + urlencode(query.params())
            )
            command = query.cli_args(catalog, prepared.start_text)
            return {
                "event": "result",
                "html": html,
                "charts": view["charts"],
                "command": " ".join(_quote(a) for a in command) + " --json",
            }

        return _streamed(work)

    @app.get("/api/traces", tags=["what-if"], summary="The traces on offer")
    async def traces_api() -> list[dict[str, Any]]:
        return [
            {"name": c.name, "group": c.group, "zone": c.zone, "year": c.year}
            for c in catalog.traces()
        ]

    @app.get("/api/profiles", tags=["what-if"], summary="The profiles on offer")
    async def profiles_api() -> dict[str, Any]:
        return {
            "presets": [{"profile": spec, "label": label} for spec, label in PROFILE_PRESETS],
            "files": [c.name for c in catalog.profiles()],
        }

    @app.post(
        "/api/profiles",
        tags=["what-if"],
        summary="Check an uploaded profile CSV; answers its form for a query",
        description="A CSV with header `nodes,throughput,power`, at most"
        f" {MAX_PROFILE_UPLOAD_BYTES:,} bytes. The answer's `profile` goes in the query's"
        " `profile` parameter: the rows themselves, so that a link carries them.",
        responses={413: {"description": "Too large"}, 422: {"description": "Not a profile"}},
    )
    async def upload_profile(file: Annotated[UploadFile, File()]) -> JSONResponse:
        import warnings

        from carbonscaler.profile import ProfileError, parse_profile_csv

        data = await file.read(MAX_PROFILE_UPLOAD_BYTES + 1)
        if len(data) > MAX_PROFILE_UPLOAD_BYTES:
            return JSONResponse(
                {"detail": f"a profile CSV may be at most {MAX_PROFILE_UPLOAD_BYTES:,} bytes"},
                status_code=413,
            )
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return JSONResponse({"detail": "the profile is not UTF-8 text"}, status_code=422)
        name = Path(file.filename or "uploaded.csv").name
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                profile = parse_profile_csv(text, name=Path(name).stem, where=name)
        except ProfileError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        spec = inline_profile(profile)
        if len(spec) > MAX_INLINE_PROFILE_CHARS:
            return JSONResponse(
                {
                    "detail": f"{name}: {profile.max_servers} server counts are more than a"
                    " link can carry; keep the rows a job can use"
                },
                status_code=413,
            )
        return JSONResponse(
            {
                "profile": spec,
                "name": name,
                "servers": profile.max_servers,
                "notes": [str(w.message) for w in caught],
            }
        )

    # -- the API: jobs -----------------------------------------------------------------------

    @app.get("/api/jobs", tags=["jobs"], summary="The runs under --runs, newest first")
    async def jobs_api() -> list[dict[str, Any]]:
        return await run_in_threadpool(lambda: [run_summary(r) for r in list_runs(config.runs)])

    @app.get(
        "/api/jobs/{folder}/{name}",
        tags=["jobs"],
        summary="One run: progress against its plan, the per-slot record, events, report",
        responses={404: {"description": "No such run"}},
    )
    async def job_api(folder: FolderParam, name: NameParam) -> JSONResponse:
        try:
            ref = await run_in_threadpool(find_run, config.runs, folder, name)
        except UnknownNameError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return JSONResponse(await run_in_threadpool(run_view, ref))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        detail = getattr(exc, "detail", "not found")
        if request.url.path.startswith(("/api/", "/static/", "/docs")):
            return JSONResponse({"detail": detail}, status_code=404)
        return page("error.html.j2", 404, title="Not found", problems=[str(detail)])

    return app


ProgressFn = Callable[[int, int, str], None]
"""Called with (done, total, label) as a long computation goes."""


def _streamed(
    work: Callable[[ProgressFn, threading.Event], dict[str, Any]],
) -> StreamingResponse:
    """Run ``work`` in a thread and stream its progress events, then its result (or error),
    as newline-delimited JSON; closing the request sets the event ``work`` is given."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()

    def progress(done: int, total: int, label: str) -> None:
        event = {"event": "progress", "done": done, "total": total, "label": label}
        loop.call_soon_threadsafe(queue.put_nowait, event)

    return StreamingResponse(
        _events(loop, queue, lambda: work(progress, cancelled), cancelled),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(
    loop: asyncio.AbstractEventLoop,
    queue: "asyncio.Queue[dict[str, Any]]",
    work: Callable[[], dict[str, Any]],
    cancelled: threading.Event,
) -> AsyncIterator[bytes]:
    """A long computation's progress events, then its result (or error), as NDJSON lines;
    ``cancelled`` is set when the request goes away or all is sent."""
    task = loop.run_in_executor(None, work)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    getter: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield _line(getter.result())
                continue
            while not queue.empty():
                yield _line(queue.get_nowait())
            yield _line(_outcome(task))
            return
    finally:
        cancelled.set()
        if getter is not None:
            getter.cancel()


def _outcome(task: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
    """The stream's last event: the results, or what went wrong."""
    try:
        return task.result()
    except SweepCancelled:
        return {"event": "cancelled"}
    except Exception as exc:
        problem = _as_problem(exc)
        if problem is None:
            log.exception("what-if failed")
            problem = _Problem(500, [f"the sweep failed: {exc}"])
        return {"event": "error", "status": problem.status, "detail": "; ".join(problem.problems)}


def _ignore(done: int, total: int, label: str) -> None:
    """Progress nobody watches."""


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, allow_nan=False) + "\n").encode()


def _link(query: AdvisorQuery) -> str:
    return "/advisor?" + urlencode(query.params())


def _script_json(data: Any) -> Markup:
    """``data`` as JSON to put inside a ``<script type="application/json">`` element: no
    ``<``, ``>`` or ``&`` that could end the element early."""
    text = json.dumps(data, allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return Markup(text)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)

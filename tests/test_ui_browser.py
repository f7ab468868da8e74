"""The dashboard in a real browser (issue #13): Debian's Chromium driven by selenium through
the system chromedriver (nothing is downloaded: the driver's path is given, so
selenium-manager never runs).

What a person sees: the pages render without console errors, the savings in the page are
what ``carbonscaler advise`` prints for the same query, changing a field updates the results
and the URL, the URL reproduces the view, a long query shows progress and can be cancelled,
the page fits a phone, and the jobs page follows a simulated run to its report.

Set ``CARBONSCALER_SCREENSHOTS=DIR`` to keep screenshots of the pages in DIR (docs/dashboard.png
comes from here).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from _servers import ServiceThread
from carbonscaler.cli import app as cli_app
from carbonscaler.ui import DashboardConfig, create_app
from carbonscaler.wording import percent

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NL = "NL_2022_hourly"
QUERY = f"trace={NL}&profile=amdahl:0.05&length=24&slack=1.5&min=1&max=8&starts=60"
WAIT_S = 60

selenium = pytest.importorskip(
    "selenium", reason="selenium is not installed (pip install selenium)"
)
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(
        f"{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def dashboard(shared_dir: Path, runs: Path) -> Iterator[str]:
    config = DashboardConfig(trace_folders=(shared_dir / "traces",), runs=runs)
    with ServiceThread(create_app(config)) as server:
        yield server.url


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """The browser console's errors since the last look."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait(driver: WebDriver, until: Callable[[WebDriver], Any], timeout: float = WAIT_S) -> Any:
    """Until ``until`` holds; an element redrawn while it was being read is looked up again
    at the next poll (results replace their section as they stream in)."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(until)


def savings(driver: WebDriver) -> dict[str, str]:
    """Each policy's saving as the page shows it (the first trace's table)."""
    table = driver.find_element(By.CSS_SELECTOR, "section.scenario")
    cells = table.find_elements(By.CSS_SELECTOR, "[data-testid^='saving-']")
    return {c.get_attribute("data-testid").removeprefix("saving-"): c.text for c in cells}


def results_for(driver: WebDriver, title: str) -> None:
    """Wait until the results (and the schedule chart) of the query titled ``title`` show."""
    wait(
        driver,
        lambda d: any(title in h.text for h in d.find_elements(By.CSS_SELECTOR, "section h2")),
    )
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-schedule svg"))


def screenshot(driver: WebDriver, name: str) -> None:
    """The whole page as ``name`` in ``$CARBONSCALER_SCREENSHOTS``, if set."""
    folder = os.environ.get("CARBONSCALER_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], height + 100)
    time.sleep(0.3)  # the charts redraw at the new size
    driver.save_screenshot(str(Path(folder) / name))
    driver.set_window_size(size["width"], size["height"])


def test_what_if_shows_what_carbonscaler_advise_prints(driver: WebDriver, dashboard: str) -> None:
    driver.get(f"{dashboard}/advisor?{QUERY}")
    results_for(driver, "deadline 1.5× length")
    shown = savings(driver)
    command = driver.find_element(By.ID, "command").get_attribute("textContent")
    args = shlex.split(command)
    assert args[:2] == ["carbonscaler", "advise"] and args[-1] == "--json"
    done = CliRunner().invoke(cli_app, args[1:])
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout)
    assert shown == {r["policy"]: percent(r["mean_savings_vs_agnostic_pct"]) for r in printed}
    # The charts: axes with units, legends, the deadline marked.
    page = driver.find_element(By.ID, "results").text
    for words in (
        "saved vs carbon-agnostic (%)",
        "gCO2eq/kWh",
        "deadline (36 h)",
        "servers",
        "hour of day the job arrives (UTC)",
        "month the job arrives",
    ):
        assert words in page, words
    assert "met its deadline" in driver.find_element(By.ID, "schedule-caption").text
    screenshot(driver, "advisor.png")
    assert console_errors(driver) == []


def test_changing_a_field_updates_the_view_and_the_url_which_reproduces_it(
    driver: WebDriver, dashboard: str
) -> None:
    driver.get(f"{dashboard}/advisor?{QUERY}")
    results_for(driver, "deadline 1.5× length")
    before = savings(driver)
    slack = driver.find_element(By.ID, "slack")
    slack.clear()
    slack.send_keys("2", Keys.TAB)  # leaving the field is a change
    wait(driver, lambda d: "slack=2&" in d.current_url)
    results_for(driver, "deadline 2× length")
    after = savings(driver)
    assert after != before
    Select(driver.find_element(By.ID, "show")).select_by_value("suspend-resume")
    wait(driver, lambda d: "show=suspend-resume" in d.current_url)
    wait(
        driver,
        lambda d: "suspend-resume arriving" in d.find_element(By.ID, "schedule-caption").text,
    )
    caption = driver.find_element(By.ID, "schedule-caption").text
    link = driver.current_url
    driver.get("about:blank")
    driver.get(link)  # the shared link
    results_for(driver, "deadline 2× length")
    assert savings(driver) == after
    assert driver.find_element(By.ID, "slack").get_attribute("value") == "2"
    wait(driver, lambda d: d.find_element(By.ID, "schedule-caption").text == caption)
    assert console_errors(driver) == []


def test_a_policy_that_misses_deadlines_is_flagged(driver: WebDriver, dashboard: str) -> None:
    driver.get(f"{dashboard}/advisor?{QUERY}")
    results_for(driver, "deadline 1.5× length")
    row = driver.find_element(By.CSS_SELECTOR, "tr[data-policy='suspend-resume-threshold']")
    assert "missed" in row.get_attribute("class")
    assert "of deadlines" in row.find_element(By.CSS_SELECTOR, ".miss-flag").text
    rows = driver.find_elements(By.CSS_SELECTOR, "section.scenario tbody tr")
    assert rows[-1] == row  # ranked below every policy that meets its deadlines
    assert driver.find_elements(By.CSS_SELECTOR, "#chart-distribution g.range.missed")
    assert driver.find_elements(By.CSS_SELECTOR, "#chart-hour .miss-mark")
    assert "misses deadlines" in driver.find_element(By.ID, "chart-distribution").text


def test_bad_input_is_shown_on_the_page(driver: WebDriver, dashboard: str) -> None:
    for query, says in (
        (f"trace={NL}&slack=0.5", "slack"),
        ("trace=nowhere", "unknown trace 'nowhere'"),
        (f"trace={NL}&length=7000", "fewer than the deadline"),
    ):
        driver.get(f"{dashboard}/advisor?{query}")
        problems = driver.find_element(By.CSS_SELECTOR, "[data-testid=problems]")
        assert problems.is_displayed() and says in problems.text, query
        assert driver.find_element(By.ID, "results").text == ""
    console_errors(driver)  # the 4xx answers themselves are logged; nothing else may be


def test_a_long_query_shows_progress_and_can_be_cancelled(
    driver: WebDriver, dashboard: str
) -> None:
    traces = "&".join(f"trace={t}" for t in ("DE:2020", "FR:2020", "ES:2020", "IT:2020"))
    driver.get(f"{dashboard}/advisor?{traces}&length=30&slack=1.7&starts=all")
    cancel = driver.find_element(By.ID, "cancel")
    wait(driver, lambda d: cancel.is_enabled(), timeout=10)
    assert driver.find_element(By.CSS_SELECTOR, "[data-testid=progress]").is_displayed()
    cancel.click()
    wait(driver, lambda d: "cancelled" in d.find_element(By.ID, "progress-label").text)
    time.sleep(1.0)
    assert driver.find_element(By.ID, "results").text == ""  # nothing arrives after it
    assert console_errors(driver) == []


def test_the_page_fits_a_phone(driver: WebDriver, dashboard: str) -> None:
    driver.set_window_size(390, 900)
    try:
        driver.get(f"{dashboard}/advisor?{QUERY}")
        results_for(driver, "deadline 1.5× length")
        width = driver.execute_script("return window.innerWidth")
        page = driver.execute_script("return document.documentElement.scrollWidth")
        assert page <= width
        for chart in driver.find_elements(By.CSS_SELECTOR, ".chart-box svg"):
            assert 0 < chart.size["width"] <= width
        screenshot(driver, "advisor-phone.png")
    finally:
        driver.set_window_size(1280, 1600)


def paced_run(runs: Path, name: str, pace_s: float) -> threading.Thread:
    """What ``carbonscaler run JOB --simulate --pace S --report-dir RUNS/NAME`` runs (the
    command's own function, in a thread: no process start-up on a loaded machine): the
    simulation keeps its state in the folder as a real run does, on a virtual clock that also
    passes for real (``pace_s`` wall seconds per slot), and writes its report there."""
    from carbonscaler.cli.run import simulate
    from carbonscaler.control import JobSpec

    spec = JobSpec.model_validate(
        {
            "name": name,
            "workload": {"command": "true"},
            "profile": "amdahl:0.05",
            "minReplicas": 1,
            "maxReplicas": 2,
            "length_hours": 12,
            "slack": 2,
            "carbon": {"dataset_zone": "DE", "year": 2020, "start": "2020-03-02T00:00Z"},
            "checkpoint_dir": str(runs.parent / f"{name}-checkpoints"),
        }
    )
    thread = threading.Thread(
        target=simulate,
        args=(spec,),
        kwargs={"as_json": True, "report_dir": runs / name, "pace_s": pace_s},
        name=f"paced-{name}",
        daemon=True,
    )
    thread.start()
    return thread


def test_the_jobs_page_follows_a_simulated_run_to_completion(
    driver: WebDriver, dashboard: str, runs: Path
) -> None:
    driver.get(f"{dashboard}/jobs")
    run = paced_run(runs, "followed", pace_s=1.0)  # 24 slots to the deadline
    # The list and the run's parts are replaced as they refresh: each look is one script.
    link = "document.querySelector(\"[data-run='followed/followed'] a\")"
    wait(driver, lambda d: d.execute_script(f"return {link} !== null"))
    driver.execute_script(f"{link}.click()")
    wait(driver, lambda d: d.find_elements(By.ID, "run"))
    look = (
        "const text = (id) => document.querySelector(`[data-testid=${id}]`)?.textContent;"
        "return [text('run-status'), text('run-progress'), text('report-headline')];"
    )
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 2 * WAIT_S  # the run itself takes 24 s; a loaded machine more
    while True:
        status, progress, headline = driver.execute_script(look)
        if headline:
            break
        assert time.monotonic() < deadline, f"no report after {2 * WAIT_S} s: {seen}"
        if status and progress:
            seen.append((status, progress.strip()))
        if len(seen) == 8:
            screenshot(driver, "run-live.png")
        time.sleep(0.2)
    run.join(timeout=30)
    assert not run.is_alive()
    live = [p for s, p in seen if s == "running"]
    assert live and any(float(p.rstrip(" %")) < 100 for p in live), seen  # seen under way
    assert driver.find_element(By.CSS_SELECTOR, "[data-testid=run-status]").text == "finished"
    report = json.loads((runs / "followed" / "report.json").read_text())
    headline = driver.find_element(By.CSS_SELECTOR, "[data-testid=report-headline]").text
    assert headline.startswith(f"saved {report['savings_pct']:.1f} %")
    assert driver.find_element(By.CSS_SELECTOR, "[data-testid=run-progress]").text == "100.0 %"
    assert "job hours since arrival" in driver.find_element(By.ID, "chart-run").text
    assert driver.find_elements(By.CSS_SELECTOR, "[data-testid=events] tr.rescaled")
    screenshot(driver, "run.png")
    assert console_errors(driver) == []

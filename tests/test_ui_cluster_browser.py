"""The cluster page in a real browser (issue #13), as tests/test_ui_browser.py drives the
other pages (its browser fixture and helpers are reused): the page renders without console
errors, each policy's saving in the page is the library's for the same stream, changing the
capacity updates the results and the URL, and the page fits a phone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
# test_ui_browser skips this module too, with its reason, when Chromium or chromedriver is
# missing.
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from _servers import ServiceThread  # noqa: E402
from carbonscaler.ui import DashboardConfig, create_app  # noqa: E402
from carbonscaler.ui.catalog import Catalog  # noqa: E402
from carbonscaler.ui.cluster import parse_cluster_query, prepare_cluster  # noqa: E402
from carbonscaler.wording import percent  # noqa: E402
from test_ui import write_trace  # noqa: E402
from test_ui_browser import console_errors, driver, wait  # noqa: E402

__all__ = ["driver"]  # the fixture, imported for these tests

QUERY = "trace=short&jobs=12&rate=2&shortest=4&longest=16&slack=1.5&min=1&max=6&capacity=8"


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cluster-traces")
    write_trace(folder / "short.csv")
    return folder


@pytest.fixture(scope="module")
def dashboard(traces: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = DashboardConfig(
        trace_folders=(traces,), runs=tmp_path_factory.mktemp("runs"), dataset=False
    )
    with ServiceThread(create_app(config)) as server:
        yield server.url


def library_savings(traces: Path, query: str) -> dict[str, str]:
    """Each policy's saving as the library computes it for the same stream, worded."""
    from carbonscaler.advisor.cluster import cluster_summary, compare_cluster_policies

    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        key, value = pair.split("=", 1)
        params.setdefault(key, []).append(value)
    parsed = parse_cluster_query(params, None)
    prepared = prepare_cluster(parsed, Catalog((traces,), dataset=False))
    outcomes = compare_cluster_policies(
        prepared.jobs,
        prepared.carbon,
        parsed.capacity,
        ("agnostic", "suspend-resume", "carbonscaler", "joint"),
        prepared.conditions,
    )
    return {
        row["policy"]: percent(row["savings_vs_agnostic_pct"]) for row in cluster_summary(outcomes)
    }


def shown_savings(driver: WebDriver) -> dict[str, str]:
    cells = driver.find_elements(By.CSS_SELECTOR, "[data-testid^='cluster-saving-']")
    return {c.get_attribute("data-testid").removeprefix("cluster-saving-"): c.text for c in cells}


def savings_are(driver: WebDriver, expected: dict[str, str]) -> None:
    """Wait until the page shows ``expected`` (the results may be redrawn while read)."""
    try:
        wait(driver, lambda d: shown_savings(d) == expected, timeout=10)
    except Exception:  # say what differs
        assert shown_savings(driver) == expected


def results_for(driver: WebDriver, capacity: int) -> None:
    def shown(d: WebDriver) -> bool:
        heads = d.find_elements(By.CSS_SELECTOR, "section.cluster h2")
        return any(f"on {capacity} servers" in h.text for h in heads) and bool(
            d.find_elements(By.CSS_SELECTOR, "#chart-shares svg rect")
        )

    wait(driver, shown)


def test_the_cluster_page(driver: WebDriver, dashboard: str, traces: Path) -> None:
    console_errors(driver)  # what earlier pages left
    driver.get(f"{dashboard}/cluster?{QUERY}")
    results_for(driver, 8)
    savings_are(driver, library_savings(traces, QUERY))
    misses = driver.find_element(By.CSS_SELECTOR, "[data-testid='cluster-misses-joint']")
    assert misses.text
    legend = driver.find_element(By.CSS_SELECTOR, "#chart-shares .legend").text
    assert "capacity" in legend and "carbon intensity" in legend
    assert driver.find_elements(By.CSS_SELECTOR, "#chart-used svg path.series")
    # Changing the capacity runs it again and puts it in the URL.
    field = driver.find_element(By.ID, "capacity")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("5", Keys.TAB)
    results_for(driver, 5)
    assert "capacity=5" in driver.current_url
    savings_are(driver, library_savings(traces, QUERY.replace("capacity=8", "capacity=5")))
    assert "--capacity 5" in driver.find_element(By.ID, "command").get_attribute("textContent")
    # The URL reproduces the view.
    driver.get(driver.current_url)
    results_for(driver, 5)
    assert driver.find_element(By.ID, "capacity").get_attribute("value") == "5"
    assert console_errors(driver) == []


def test_the_cluster_page_fits_a_phone(driver: WebDriver, dashboard: str) -> None:
    driver.set_window_size(390, 900)
    try:
        driver.get(f"{dashboard}/cluster?{QUERY}")
        results_for(driver, 8)
        width = driver.execute_script("return window.innerWidth")
        page = driver.execute_script("return document.documentElement.scrollWidth")
        assert page <= width
        for chart in driver.find_elements(By.CSS_SELECTOR, ".chart-box svg"):
            assert 0 < chart.size["width"] <= width
        assert console_errors(driver) == []
    finally:
        driver.set_window_size(1280, 1600)

"""report.html in a real headless Chromium: it loads cleanly, its tables sort, its plots draw every artifact.

Chromium and chromedriver come from the operating system's packages (.ci/run installs them); Selenium is pointed
at them so it never downloads a browser.  Without them the test is skipped, except under CI, where it fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.report_records import broken_bundle, write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    root = tmp_path_factory.mktemp("report")
    out = write_report(root, broken_bundle(root))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get((out / "report.html").as_uri())
        yield driver
    finally:
        driver.quit()


def _section(driver, model: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, f"model-{model}")


def _column(table, heading: str) -> list[str]:
    from selenium.webdriver.common.by import By

    headings = [th.text.rstrip(" ▲▼") for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    index = headings.index(heading)
    return [row.find_elements(By.TAG_NAME, "td")[index].text for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


def test_the_page_loads_without_console_errors(page):
    assert page.title == "acme 2.0.0 report"
    assert [entry for entry in page.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []
    from selenium.webdriver.common.by import By

    assert "Not packaged" in page.find_element(By.ID, "not-packaged").text


def test_the_tables_have_a_row_per_artifact_and_sort_by_the_clicked_heading(page):
    from selenium.webdriver.common.by import By

    digits = _section(page, "digits").find_element(By.CSS_SELECTOR, "table.artifacts")
    faces = _section(page, "faces").find_element(By.CSS_SELECTOR, "table.artifacts")
    assert _column(digits, "target") == ["pixel-8", "pixel-8", "npu-phone", "npu-phone", "apple-a17"]
    assert len(_column(faces, "target")) == 3
    size = next(th for th in digits.find_elements(By.TAG_NAME, "th") if th.text == "size (KiB)")
    size.click()
    assert _column(digits, "size (KiB)") == ["130.0", "250.0", "420.0", "612.0", "not built"]
    assert size.get_attribute("aria-sort") == "ascending"
    size.click()
    assert _column(digits, "size (KiB)") == ["not built", "612.0", "420.0", "250.0", "130.0"]
    next(th for th in digits.find_elements(By.TAG_NAME, "th") if th.text == "target").click()
    assert _column(digits, "target") == ["apple-a17", "npu-phone", "npu-phone", "pixel-8", "pixel-8"]


def test_the_plots_draw_a_marker_per_built_artifact_with_legends_and_budget_lines(page):
    from selenium.webdriver.common.by import By

    digits, faces = _section(page, "digits"), _section(page, "faces")
    markers = digits.find_elements(By.CSS_SELECTOR, "figure svg g.point")
    # Four of the five were built; the one that was not is named under the plot.
    assert len(markers) == 4 and all(marker.is_displayed() for marker in markers)
    titles = sorted(m.find_element(By.TAG_NAME, "title").get_attribute("textContent").split("\n")[0] for m in markers)
    assert titles == ["digits.fp16.coreml@apple-a17", "digits.fp16.tflite@pixel-8", "digits.fp32.tflite@pixel-8",
                      "digits.int8.tflite@npu-phone"]
    assert "not plotted: digits.fp16.tflite@npu-phone (not built)" in digits.find_element(By.TAG_NAME, "figure").text
    legend = [t.get_attribute("textContent") for t in digits.find_elements(By.CSS_SELECTOR, "figure svg g.legend text")]
    assert {"pixel-8", "npu-phone", "apple-a17", "tflite", "coreml", "max_size_kb 500"} <= set(legend), legend
    assert len(digits.find_elements(By.CSS_SELECTOR, "figure svg g.budget")) == 2  # size and accuracy drop
    assert len(faces.find_elements(By.CSS_SELECTOR, "figure svg g.point")) == 2
    assert "min_snr_db 30" in [t.get_attribute("textContent") for t in faces.find_elements(By.CSS_SELECTOR, "svg g.legend text")]
    box = markers[0].rect
    assert box["width"] > 4 and box["height"] > 4  # drawn, not collapsed


def test_accelerator_coverage_names_the_ops_that_fall_back(page):
    from selenium.webdriver.common.by import By

    coverage = _section(page, "digits").find_element(By.CSS_SELECTOR, "table.coverage")
    assert _column(coverage, "ops that fall back to the CPU") == ["none: every op runs on the accelerator", "MEAN ×2, SOFTMAX ×1"]
    assert _column(coverage, "ops on it") == ["9/9 (100%)", "12/15 (80%)"]

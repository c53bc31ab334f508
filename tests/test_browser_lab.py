"""The widget lab in a real browser: JupyterLab on loopback, headless Chromium, Selenium.

nbval runs notebooks without a front end, so it cannot see what a learner sees: whether the
widgets render, whether a slider's value is the one that runs, whether a run started with the
button draws, whether the kernel stays free while a run (and a Ray start) is in progress, and
whether the SLO advisor's advice follows its sliders and its Run shows a measured verdict. This
test opens ``notebooks/06_widget_lab.ipynb`` (a temporary copy) in JupyterLab served from the
project's environment and checks each of those, step by step, with a screenshot per step in
``test-artifacts/browser/`` (git-ignored).

Needs Debian's ``chromium`` and ``chromium-driver`` (``sudo apt-get install -y chromium
chromium-driver``; CI's ``.ci/run`` installs them) and the ``selenium`` package; skips with that
message otherwise. Nothing is downloaded at run time. Every wait is a ``WebDriverWait`` on a DOM
condition. One JupyterLab server and one browser serve every step (module-scoped fixtures), and
the steps run in order. Run it alone with ``pytest -m browser tests/test_browser_lab.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import chromium, jupyter_lab, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "06_widget_lab.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
#: Clock seconds for one step's DOM condition (a Ray start on a busy 2-core machine included).
STEP_TIMEOUT_S = 120
#: The notebook's own time scale in the kernel (as under nbval in CI).
TIME_SCALE = "0.02"

require_browser()

from selenium.common.exceptions import JavascriptException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 with a token, over a temporary copy of the notebook."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
               "PYTHONPATH", "")]).rstrip(os.pathsep),
           "PARALLEL_KIT_TIME_SCALE": TIME_SCALE, "PARALLEL_KIT_BACKEND": "sim",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    with jupyter_lab(work, env) as (url, token):
        yield f"{url}/lab/tree/{NOTEBOOK.name}?token={token}&reset"


@pytest.fixture(scope="module")
def browser(lab_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob("*.png"):
            old.unlink()
        driver.get(lab_server)
        yield driver


# -- helpers -----------------------------------------------------------------------------------

#: The notebook panel, in JavaScript: the shell's current widget, or — when the headless window
#: has no focus, so the shell tracks none — the main area's notebook panel.
PANEL = ("(window.jupyterapp.shell.currentWidget || [...window.jupyterapp.shell.widgets('main')]"
         ".find(w => w.content && w.content.widgets))")


def wait(driver: Any, condition: Any, what: str, timeout: float = STEP_TIMEOUT_S) -> Any:
    t0 = time.monotonic()
    try:
        result = WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
        print(f"browser: {what}: {time.monotonic() - t0:.1f} s")
        return result
    except Exception:
        shot(driver, "failed-" + re.sub(r"\W+", "-", what)[:40])
        raise AssertionError(f"browser: {what} (within {timeout:g} s); page text ends: "
                             + page_text(driver)[-1500:]) from None


def shot(driver: Any, name: str, show: str | None = None) -> None:
    """Save a screenshot; ``show``: a CSS selector whose last match is scrolled into view."""
    if show:
        driver.execute_script("const e = [...document.querySelectorAll(arguments[0])].pop();"
                              "if (e) e.scrollIntoView({block: 'center'});", show)
    n = len(list(ARTIFACTS.glob("*.png"))) + 1
    driver.save_screenshot(str(ARTIFACTS / f"{n:02d}-{name}.png"))


def page_text(driver: Any) -> str:
    try:
        return str(driver.execute_script(
            "const n = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');"
            "return n ? n.innerText : document.body.innerText;"))
    except JavascriptException:
        return ""


def advisor_text(driver: Any) -> str:
    """The text of every HTML widget (the advisor's recommendation among them), read from the
    DOM's ``textContent``: present whether or not JupyterLab renders that cell right now (its
    notebook skips laying out cells out of view)."""
    try:
        return str(driver.execute_script(
            "return [...document.querySelectorAll('.widget-html')]"
            "  .map(e => e.textContent).join('\\n');"))
    except JavascriptException:
        return ""


def command(driver: Any, name: str, args: dict[str, Any] | None = None) -> None:
    """Run a JupyterLab command (the same as its menu entry) through the exposed app."""
    # Not awaited here (Selenium would wait on the returned promise with its own timeout):
    # each step waits for its outcome in the DOM instead.
    driver.execute_script("window.jupyterapp.commands.execute(arguments[0], arguments[1]);",
                          name, args or {})


def kernel_idle(driver: Any) -> bool:
    return bool(driver.execute_script(
        "const w = window.jupyterapp && " + PANEL + ";"
        "const k = w && w.sessionContext && w.sessionContext.session"
        "  && w.sessionContext.session.kernel;"
        "return !!k && k.status === 'idle' && !w.content.widgets.some("
        "  c => c.model.type === 'code' && c.model.executionState === 'running');"))


def all_cells_ran(driver: Any) -> bool:
    return bool(driver.execute_script(
        "const w = " + PANEL + ";"
        "return w.content.widgets.filter(c => c.model.type === 'code')"
        "  .every(c => c.model.executionCount !== null"
        "             && c.model.executionState !== 'running');")) and kernel_idle(driver)


def errors_shown(driver: Any) -> list[str]:
    return list(driver.execute_script(
        "return [...document.querySelectorAll("
        "  '.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
        "  .map(e => e.innerText);"))


def slider(driver: Any, description: str) -> Any:
    for box in driver.find_elements(By.CSS_SELECTOR, ".widget-slider"):
        label = box.find_elements(By.CSS_SELECTOR, ".widget-label")
        if label and label[0].text.strip() == description:
            return box
    raise AssertionError(f"no slider {description!r}")


def readout(driver: Any, description: str) -> str:
    return str(slider(driver, description).find_element(By.CSS_SELECTOR,
                                                        ".widget-readout").text.strip())


def move_slider(driver: Any, description: str, keys: str) -> None:
    """Move a slider the way a learner can without a mouse: focus its handle, press keys."""
    handle = slider(driver, description).find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    handle.send_keys(keys)


def run_new_cell(driver: Any, source: str) -> None:
    """Append a code cell at the end, and run it (as a learner typing into a new cell)."""
    driver.execute_script(
        "const nb = " + PANEL + ".content;"
        "nb.model.sharedModel.insertCell(nb.model.cells.length,"
        "  {cell_type: 'code', source: arguments[0]});"
        "nb.activeCellIndex = nb.model.cells.length - 1;", source)
    command(driver, "notebook:run-cell")


def last_cell_output(driver: Any) -> str:
    return str(driver.execute_script(
        "const cells = " + PANEL + ".content.widgets;"
        "const c = cells[cells.length - 1];"
        "return c.outputArea ? c.outputArea.node.innerText : '';"))


def lab_output_text(driver: Any) -> str:
    """The text of the lab's Output widget (its caption and table; figures are images)."""
    return str(driver.execute_script(
        "return [...document.querySelectorAll('.widget-output')].map(e => e.innerText)"
        "  .join('\\n');"))


# -- the steps, in order ------------------------------------------------------------------------

def test_1_run_all_finishes_without_error_and_the_widgets_render(browser: Any) -> None:
    wait(browser, lambda d: d.execute_script("return !!(window.jupyterapp && " + PANEL
                                             + " && " + PANEL + ".content)"),
         "the notebook opens")
    wait(browser, kernel_idle, "the kernel starts")
    shot(browser, "opened")
    # Start from a notebook without outputs, so that what shows below is this run's.
    command(browser, "notebook:clear-all-cell-outputs")
    wait(browser, lambda d: d.execute_script(
        "return " + PANEL + ".content.widgets"
        "  .every(c => c.model.type !== 'code' || c.model.executionCount === null);"),
        "the saved outputs are cleared")
    command(browser, "notebook:run-all-cells")
    wait(browser, all_cells_ran, "Run All finishes")
    shot(browser, "run-all-done")
    assert errors_shown(browser) == [], errors_shown(browser)
    text = page_text(browser)
    assert "Error displaying widget" not in text
    assert "VBox(" not in text, "the lab shows as text, not as widgets"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".widget-slider")) >= 5
    assert browser.find_elements(By.XPATH, "//button[normalize-space()='Run']")


def test_2_what_the_learner_sees_is_what_ran(browser: Any) -> None:
    # The notebook set 6 requests of 5 s on 3 GPUs from code; the run used them (its cells
    # assert that in the kernel), and the sliders show the same.
    assert readout(browser, "requests") == "6"
    assert readout(browser, "seconds per request") == "5"
    assert readout(browser, "time scale") == TIME_SCALE
    wait(browser, lambda d: "12 / 12" in page_text(d), "the progress bar reaches 12 / 12")
    wait(browser, lambda d: "run 1: sequential, pool · 6 requests × 5 s" in lab_output_text(d),
         "the lab draws run 1 with its settings")
    shot(browser, "run-1-drawn", show=".widget-output")


def test_3_sliders_and_the_run_button_draw_a_new_run(browser: Any) -> None:
    move_slider(browser, "requests", Keys.ARROW_RIGHT)  # 6 → 7
    move_slider(browser, "seconds per request", Keys.ARROW_RIGHT)  # 5 → 6
    wait(browser, lambda d: readout(d, "requests") == "7" and
         readout(d, "seconds per request") == "6", "the sliders move to 7 requests of 6 s")
    shot(browser, "sliders-moved", show=".widget-slider")
    browser.find_element(By.XPATH, "//button[normalize-space()='Run']").click()
    caption = f"run 2: sequential, pool · 7 requests × 6 s · 3 GPUs × 1 slot · time scale {TIME_SCALE}"
    wait(browser, lambda d: caption in lab_output_text(d), "run 2's timeline is drawn")
    wait(browser, lambda d: "14 / 14" in page_text(d), "the progress bar reaches 14 / 14")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".widget-output img")) >= 2
    assert "run 1:" not in lab_output_text(browser)
    shot(browser, "run-2-drawn", show=".widget-output")


def test_4_another_cell_runs_while_ray_starts(browser: Any) -> None:
    for box in browser.find_elements(By.CSS_SELECTOR, ".widget-checkbox"):
        name = box.text.strip()
        ticked = box.find_element(By.CSS_SELECTOR, "input").is_selected()
        if (name == "ray") != ticked:
            box.find_element(By.CSS_SELECTOR, "input").click()
    wait(browser, lambda d: "predicted: ray" in page_text(d), "only ray is ticked")
    browser.find_element(By.XPATH, "//button[normalize-space()='Run']").click()
    # A learner's next cell, typed while the cluster starts: it runs at once because the lab
    # keeps the kernel free; it reports what the lab was doing when it ran.
    run_new_cell(browser, "\n".join([
        "import time",
        "t0 = time.monotonic()",
        "while 'starting Ray' not in lab.status.value and time.monotonic() - t0 < 60:",
        "    time.sleep(0.05)  # the button's click reaches the kernel first",
        "print('this cell ran while:', lab.status.value, '| run finished:', lab.task.done())"]))
    wait(browser, lambda d: "this cell ran while" in last_cell_output(d),
         "the new cell runs during the Ray start")
    shot(browser, "cell-ran-during-ray-start", show=".jp-Cell")
    out = last_cell_output(browser)
    assert "starting Ray" in out and "run finished: False" in out, out
    caption = "run 3: ray · 7 requests × 6 s · 3 GPUs × 1 slot"
    wait(browser, lambda d: caption in lab_output_text(d), "the Ray run is drawn")
    wait(browser, lambda d: "7 / 7" in page_text(d), "the progress bar reaches 7 / 7")
    shot(browser, "ray-run-drawn", show=".widget-output")
    run_new_cell(browser, "from parallel_kit.servers import raycluster\n"
                          "print('ray stopped:', raycluster.shutdown())")
    wait(browser, lambda d: "ray stopped" in last_cell_output(d), "Ray is stopped")
    assert errors_shown(browser) == [], errors_shown(browser)


def _advice(rate: float, slo: str) -> tuple[str, str, Any]:
    """What the advisor must show for these inputs: ``parallel-kit capacity``'s plan, computed
    here (its own defaults: profile seed, pool, up to 8 servers × 1, 2, 4 slots)."""
    from parallel_kit.bench import capacity as cap

    plan = cap.plan_capacity(cap.Traffic(rate), cap.PercentileSlo.parse(slo), profile="seed",
                             modes=["pool"], max_gpus=8, slots=[1, 2, 4])
    best, smaller = plan.best, plan.next_smaller
    assert best is not None and smaller is not None
    first = (f"recommended: {best.label} — predicted latency_p95 "
             f"{best.figures['latency_p95']:.3g} s, ttft_p95 {best.figures['ttft_p95']:.3g} s "
             f"(SLO {plan.slo}")
    return first, f"next smaller: {smaller.label} misses: {smaller.why()}", best


def test_5_the_slo_advisor_follows_its_sliders_and_measures_the_recommendation(
        browser: Any) -> None:
    before, _, best_before = _advice(0.125, "latency_p95=30,ttft_p95=20")
    wait(browser, lambda d: before in advisor_text(d), "the advisor shows the default plan")
    assert readout(browser, "arrival rate (req/s)") == "0.125"
    move_slider(browser, "arrival rate (req/s)", Keys.ARROW_RIGHT * 2)  # 0.125 → 0.15 → 0.2
    move_slider(browser, "latency p95 target", Keys.ARROW_LEFT)  # 30 s → 25 s
    wait(browser, lambda d: readout(d, "arrival rate (req/s)") == "0.2"
         and readout(d, "latency p95 target") == "25 s", "the advisor's sliders move")
    first, smaller, best = _advice(0.2, "latency_p95=25,ttft_p95=20")
    assert best.label != best_before.label  # the advice has to change to pass
    try:
        wait(browser, lambda d: first in advisor_text(d) and smaller in advisor_text(d),
             "the recommendation becomes capacity's plan for 0.2 req/s, latency p95 ≤ 25 s")
    except AssertionError as exc:
        # Say which side lost the change: what the kernel's advisor holds, and what shows.
        run_new_cell(browser, "print('advisor in the kernel:', advisor.rate.value,\n"
                              "      advisor.latency_p95.value, repr(advisor.error),\n"
                              "      advisor.recommendation_text())")
        wait(browser, lambda d: "advisor in the kernel:" in last_cell_output(d),
             "the kernel reports its advisor")
        raise AssertionError(f"{exc}\n{last_cell_output(browser)}\nthe advisor shows: "
                             f"{advisor_text(browser)}\nexpected: {first} / {smaller}") from None
    shot(browser, "advisor-replanned", show=".widget-html")
    run = "//button[normalize-space()='Run on simulator']"
    wait(browser, lambda d: d.find_element(By.XPATH, run).is_enabled(),
         "Run on simulator is enabled")
    browser.find_element(By.XPATH, run).click()
    verdict = f"measured {best.label}: "
    try:
        wait(browser, lambda d: verdict in advisor_text(d)
             and d.find_elements(By.CSS_SELECTOR, "table.slo-advisor-result"),
             "the measured verdict appears", timeout=2 * STEP_TIMEOUT_S)
    except AssertionError as exc:
        # Say where it stopped: the kernel's status line, its task, what the page shows.
        run_new_cell(browser, "print('advisor status in the kernel:', advisor.status.value,\n"
                              "      advisor.task, advisor.measurement)")
        wait(browser, lambda d: "advisor status in the kernel:" in last_cell_output(d),
             "the kernel reports its advisor")
        raise AssertionError(f"{exc}\n{last_cell_output(browser)}\nthe advisor shows: "
                             f"{advisor_text(browser)[-1500:]}") from None
    shot(browser, "advisor-measured", show="table.slo-advisor-result")
    text = page_text(browser)
    line = text[text.index(verdict):].splitlines()[0]
    assert "the SLO" in line, line
    assert f"100 of 100 requests ok on {best.servers} simulated servers" in line, line
    # The verdict is the kernel's measurement: rows the simulated servers answered.
    run_new_cell(browser, "m = advisor.measurement\n"
                          "print('advisor measured:', m.label, len(m.run.requests),\n"
                          "      len({r.worker for r in m.run.requests}),\n"
                          "      m.run.summary.backend, 'meets' if m.meets else 'misses')")
    wait(browser, lambda d: "advisor measured:" in last_cell_output(d),
         "the kernel reports the advisor's measurement")
    out = last_cell_output(browser)
    meets = "meets the SLO" in line
    assert (f"advisor measured: {best.label} 100 {best.servers} sim "
            f"{'meets' if meets else 'misses'}") in out, out
    assert errors_shown(browser) == [], errors_shown(browser)

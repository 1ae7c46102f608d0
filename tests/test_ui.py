"""What a user looks at after a search: the direct links into the MLflow UI, the 3-D Pareto plot's
log axis, and (slow) both opened in a real headless Chromium against `mlflow ui`."""

import doctest
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from autocompress import plots, urls
from autocompress._search.run import where_to_look
from conftest import free_port, wait_until

BIN = Path(sys.executable).parent
RUNS = "/#/experiments/{e}/runs?workflowType=machine_learning&orderByKey=metrics.%60return_ratio%60&orderByAsc=false"


def test_mlflow_ui_links():
    local = urls.mlflow_ui_links("sqlite:////r/mlflow.db", "4", "abc")
    assert local == {
        "runs": "http://127.0.0.1:5000" + RUNS.format(e=4),
        "pareto": "http://127.0.0.1:5000/#/experiments/4/runs/abc/artifacts/pareto/pareto.html"
                  "?workflowType=machine_learning"}
    # a tracking server is its own UI; a password in its URI never reaches a link
    served = urls.mlflow_ui_links("https://user:secret@mlflow.example:8443/", "2", None)
    assert served == {"runs": "https://mlflow.example:8443" + RUNS.format(e=2)}
    assert urls.mlflow_ui_base("postgresql://u:***@db/x", ui="http://0.0.0.0:8080/") == "http://0.0.0.0:8080"
    assert doctest.testmod(urls).failed == 0


def test_closing_lines_of_a_search(tmp_path):
    lines = where_to_look(tmp_path, {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage": None,
                                     "experiment_id": "3", "parent_run_id": "p1"})
    assert lines[1] == f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db   (then open the links below)"
    assert lines[2].split()[-1] == "http://127.0.0.1:5000" + RUNS.format(e=3)
    assert lines[3].split()[-1].endswith("/runs/p1/artifacts/pareto/pareto.html?workflowType=machine_learning")
    assert lines[4] == f"Optuna dashboard: pip install optuna-dashboard && optuna-dashboard {tmp_path}/study.journal"
    server = where_to_look(tmp_path, {"tracking_uri": "http://m:5000", "storage": "postgresql://u:***@db/o",
                                      "experiment_id": "3", "parent_run_id": "p1"})
    assert server[1] == "MLflow UI: http://m:5000" and server[-1].endswith("optuna-dashboard postgresql://u:***@db/o")


def test_log_ticks_are_few_and_readable():
    assert plots.log_ticks([0.01, 0.2]) == {"tickmode": "array", "tickvals": [0.01, 0.02, 0.05, 0.1, 0.2],
                                            "ticktext": ["1/100", "1/50", "1/20", "1/10", "1/5"]}
    wide = plots.log_ticks([0.002, 0.04, 1.0])  # 2.7 decades: 1-2-5 would be 9 ticks, 1-3 steps are 6
    assert wide["ticktext"] == ["1/300", "1/100", "1/30", "1/10", "1/3", "1"]
    assert wide["tickvals"] == pytest.approx([1 / 300, 0.01, 1 / 30, 0.1, 1 / 3, 1])
    many = plots.log_ticks([1e-9, 1.0])
    assert len(many["tickvals"]) <= 7 and many["tickvals"][-1] == 1.0
    assert plots.log_ticks([0.25, 0.47]) == {}  # within one 1-2-5 step: plotly's own ticks read fine
    assert plots.log_ticks([]) == {} and plots.log_ticks([0.0, float("nan")]) == {}


def test_pareto_html_has_the_explicit_bytes_ticks(tmp_path):
    rows = [{"trial": i, "config": {"quantize": {}}, "bytes_ratio": b, "latency_ratio": 0.5, "return_ratio": 1.0,
             "bytes": 100, "latency_ms": 0.002, "return_mean": 500.0} for i, b in enumerate([0.004, 0.03, 0.3, 1.0])]
    html = plots.pareto_html(rows, {0}, tmp_path / "p.html").read_text()
    axis = json.loads(re.search(r'"xaxis":(\{"title".*?\]\})', html).group(1))  # the figure's, not the template's
    assert axis["type"] == "log" and axis["tickmode"] == "array"
    assert axis["ticktext"] == ["1/100", "1/30", "1/10", "1/3", "1"]
    assert 'src="https://cdn.plot.ly' not in html and len(html) > 1_000_000  # plotly.js embedded: renders offline


def test_pareto_plots_show_the_fronts_heldout_return(tmp_path):
    """Front members re-evaluated on held-out episodes get a second, hollow point at that return (and
    their hover text says it); dominated trials and members without values get none."""
    rows = [{"trial": i, "config": {"quantize": {}}, "bytes_ratio": b, "latency_ratio": 0.5, "return_ratio": 1.0,
             "bytes": 100, "latency_ms": 0.002, "return_mean": 500.0} for i, b in enumerate([0.01, 0.1, 1.0])]
    rows[0].update(heldout_return_ratio=0.83, heldout_return_mean=415.0, heldout_episodes=100)
    rows[2].update(heldout_return_ratio=0.5, heldout_return_mean=250.0, heldout_episodes=100)  # not on the front
    assert [r["trial"] for r in plots.heldout_points(rows, {0, 1})] == [0]
    html = plots.pareto_html(rows, {0, 1}, tmp_path / "p.html").read_text()
    trace = json.loads(re.search(r'(\{"hoverinfo":"text","marker":\{[^}]*\}[^}]*\},"mode":"markers",'
                                 r'"name":"front, held-out \(100 episodes\)".*?"type":"scatter3d"\})', html).group(1))
    assert (trace["x"], trace["z"]) == ([0.01], [0.83])  # trial 0 only, at its held-out return
    assert trace["text"][0].endswith("held-out (100 episodes): return 415.0, ratio 0.830")
    png = plots.pareto_png(rows, {0, 1}, tmp_path / "p.png")
    plain = plots.pareto_png([{k: v for k, v in r.items() if not k.startswith("heldout")} for r in rows], {0, 1},
                             tmp_path / "plain.png")
    assert png.read_bytes() != plain.read_bytes()
    assert plots.heldout_points(rows, set()) == []


def _browser():
    """The system Chromium for playwright, or skip (fail when AUTOCOMPRESS_REQUIRE_BROWSER=1, as in CI)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
        why = "Python playwright is not installed (pip install -e '.[dev]')"
    else:
        why = "no chromium on PATH (Debian: apt-get install chromium)"
    if chromium:
        return chromium
    if os.environ.get("AUTOCOMPRESS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"AUTOCOMPRESS_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


@pytest.fixture
def mlflow_ui(search_run, tmp_path):
    """`mlflow ui` on a free port against the tiny search's tracking store; yields its base URL."""
    state = json.loads((search_run / "search.json").read_text())
    port = free_port()
    log = open(tmp_path / "mlflow_ui.log", "w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", state["tracking_uri"],
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            # no job runner (GenAI scorers; 7 more processes): starts in ~15 s instead of ~55 s here
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    base = f"http://127.0.0.1:{port}"
    try:
        up = wait_until(lambda: urllib.request.urlopen(base + "/health", timeout=2).read() == b"OK", 120, proc)
        assert up, f"mlflow ui did not start: {Path(log.name).read_text()[-2000:]}"
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the uvicorn worker goes with it
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_mlflow_ui_shows_the_runs_and_the_pareto_plot(request, tmp_path):
    """The closing lines' links, opened in headless Chromium: every trial is a row of the runs table,
    and the parent run's artifact page renders the 3-D Pareto plot (plotly, inside MLflow's iframe)."""
    chromium = _browser()  # before the search and the server: a skip costs nothing
    from playwright.sync_api import sync_playwright

    from autocompress._search import load_run

    search_run = request.getfixturevalue("search_run")
    study, state = load_run(search_run)
    assert study.metric_names == state["objectives"] == ["return", "latency", "bytes"]  # for optuna-dashboard
    base = request.getfixturevalue("mlflow_ui")
    links = urls.mlflow_ui_links(state["tracking_uri"], state["experiment_id"], state["parent_run_id"], ui=base)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])

        def check(name, url, wait):
            page = browser.new_page(viewport={"width": 1400, "height": 900})  # a fresh page: as a click on a link
            try:
                page.goto(url)
                wait(page)
                page.screenshot(path=tmp_path / f"{name}.png")
            except Exception:
                page.screenshot(path=tmp_path / f"{name}-failed.png")
                raise
            finally:
                page.close()

        def runs_table(page):
            for t in study.trials:  # flat rows, not nested (collapsed) under the parent run
                page.get_by_text(f"trial-{t.number}", exact=True).first.wait_for(timeout=60_000)
            assert page.get_by_text("Sort: return_ratio").count() == 1  # the runs table, sorted as the link says

        def pareto_plot(page):
            page.get_by_text("pareto/pareto.html").first.wait_for(timeout=60_000)
            plot = page.frame_locator("iframe").locator(".js-plotly-plot")
            plot.wait_for(timeout=60_000)
            assert plot.locator("canvas").count() >= 1  # the 3-D scene (WebGL) is drawn

        def pareto_png(page):
            png = page.locator("img[alt='pareto/pareto.png']")
            png.wait_for(timeout=60_000)
            assert png.evaluate("img => img.complete && img.naturalWidth") > 100  # the PNG decoded

        try:
            check("runs", links["runs"], runs_table)
            check("pareto_html", links["pareto"], pareto_plot)
            check("pareto_png", links["pareto"].replace("pareto.html?", "pareto.png?"), pareto_png)
        finally:
            browser.close()


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("AUTOCOMPRESS_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="AUTOCOMPRESS_REQUIRE_BROWSER=1 but no chromium"):
        _browser()
    monkeypatch.delenv("AUTOCOMPRESS_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        _browser()

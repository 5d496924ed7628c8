"""Screenshots of a study's MLflow pages, taken with headless Chromium over the DevTools Protocol.

Usage::

    python scripts/mlflow_screenshot.py --tracking-uri http://127.0.0.1:5000 --experiment demo --out shots/

writes two PNGs into ``--out``:

``compare_strategies.png``
    MLflow's compare-runs page for the child runs of the latest ``study.kind=reproduce`` parent run,
    one run per ``study.strategy`` for one training seed (the runs whose name has no ``-seed<N>``
    suffix, else the lowest N). "Show diff only" is switched on for Parameters and for Tags, Metrics
    and Artifacts are collapsed, and the picture is cropped to Run details (the run names, which
    head the columns), the parameters that differ and the tags that differ (``study.strategy``...).
``sweep_parallel_coordinates.png``
    The parallel coordinates plot of the compare-runs page of the trial runs of the latest
    ``study.kind=sweep`` parent run, with an axis for every tuned parameter (the parent's
    ``space.<name>`` params) and the sweep's objective (its ``objective`` param). MLflow opens the
    plot with at most 3 differing params, sorted by name, and the first metric every trial has;
    the script adds the others through the panel's selects, as a person would.

The tracking server must be running (``mlflow server ...``); the runs are looked up with
``MlflowClient`` and the pages are opened at ``<tracking-uri>/#/compare-runs?...``. Chromium
(``apt-get install -y chromium``) is started in its own process group with a temporary profile and
ended at exit. The script waits for each page to show what is expected (it polls the DOM) and
exits non-zero with a one-line error when Chromium is missing or a page does not render in
``--timeout`` seconds.
"""

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import websocket
from mlflow.tracking import MlflowClient

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1600, 1000)
SEED_SUFFIX = re.compile(r"-seed(\d+)$")
RUN_NAME_TAG = "study.run_name"


class ScreenshotError(RuntimeError):
    """A failure reported as one line: Chromium missing, a page that does not render, no runs."""


# --------------------------------------------------------------------------- runs


def latest_parent_with_children(client: MlflowClient, experiment_id: str, kind: str):
    """The most recent run tagged ``study.kind=<kind>`` that has child runs, and those children."""
    parents = client.search_runs(
        [experiment_id], filter_string=f"tags.`study.kind` = '{kind}'", order_by=["attributes.start_time DESC"]
    )
    for parent in parents:
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
        )
        if children:
            return parent, children
    raise ScreenshotError(f"no run tagged study.kind={kind} with child runs in experiment {experiment_id}")


def run_name(run) -> str:
    return run.data.tags.get(RUN_NAME_TAG) or run.info.run_name or ""


def seed_of(run) -> int:
    """The training seed as the run name tells it: ``-seed<N>`` suffix, -1 for none (the first seed)."""
    match = SEED_SUFFIX.search(run_name(run))
    return int(match.group(1)) if match else -1


def one_seed_per_strategy(children) -> list:
    """One child run per ``study.strategy``, all of the seed without a name suffix (else the lowest)."""
    with_strategy = [run for run in children if run.data.tags.get("study.strategy")]
    if not with_strategy:
        raise ScreenshotError("the reproduce run's children have no study.strategy tag")
    seed = min(seed_of(run) for run in with_strategy)
    chosen: dict[str, object] = {}
    for run in with_strategy:  # children come oldest first, so a rerun of a strategy wins
        if seed_of(run) == seed:
            chosen[run.data.tags["study.strategy"]] = run
    return list(chosen.values())


def compare_url(base: str, runs, experiment_id: str) -> str:
    ids = json.dumps([run.info.run_id for run in runs], separators=(",", ":"))
    query = f"runs={urllib.parse.quote(ids)}&experiments={urllib.parse.quote(json.dumps([experiment_id]))}"
    return f"{base.rstrip('/')}/#/compare-runs?{query}"


# --------------------------------------------------------------------------- Chromium


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_chromium(explicit: str | None) -> str:
    for name in [explicit] if explicit else CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    wanted = explicit or " / ".join(CHROMIUM_NAMES)
    raise ScreenshotError(f"chromium not found ({wanted}); install it with: apt-get install -y chromium")


class Browser:
    """Headless Chromium in its own process group, and a DevTools connection to its one page."""

    def __init__(self, executable: str, timeout: float):
        self.timeout = timeout
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="mlflow-shot-chromium-")
        self.process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={self.profile}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--no-sandbox",
                "--no-first-run",
                "--enable-unsafe-swiftshader",  # WebGL in software: Plotly's parallel coordinates need it
                "--hide-scrollbars",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.socket = None
        self.next_id = 0
        self.height = WINDOW[1]
        try:
            self.socket = websocket.create_connection(self._page_websocket(), timeout=timeout, suppress_origin=True)
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _page_websocket(self) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ScreenshotError(f"chromium exited at start (status {self.process.returncode})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as response:
                    targets = json.load(response)
                pages = [target for target in targets if target.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            time.sleep(0.2)
        raise ScreenshotError(f"chromium's DevTools endpoint did not answer within {self.timeout:.0f} s")

    def call(self, method: str, **params):
        """Send one CDP command and return its result (events that arrive meanwhile are dropped)."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise ScreenshotError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise ScreenshotError(f"page script failed: {text.splitlines()[0]}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str):
        """Poll a JavaScript expression until it is truthy (a throw counts as not yet); its value is returned."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ScreenshotError):
                value = self.evaluate(expression)
                if value:
                    return value
            time.sleep(0.25)
        url = self.evaluate("location.href")
        raise ScreenshotError(f"page did not render {what} within {self.timeout:.0f} s: {url}")

    def click(self, box: dict):
        """A real mouse click (press and release) at the centre of ``box``, as a person's."""
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type_text(self, text: str):
        self.call("Input.insertText", text=text)

    def press(self, key: str, code: int):
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)

    def set_height(self, height: int):
        """The viewport is WINDOW[0] wide and ``height`` tall (taller than the window to fit a section)."""
        self.height = height
        metrics = {"width": WINDOW[0], "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", **metrics)

    def open(self, url: str):
        """Load ``url`` afresh (from about:blank: a change of the #fragment alone would not reload the app)."""
        self.set_height(WINDOW[1])
        self.call("Page.navigate", url="about:blank")
        self.wait_for("location.href === 'about:blank' && document.readyState === 'complete'", "about:blank")
        self.call("Page.navigate", url=url)

    def screenshot(self, path: str, clip: dict | None = None):
        """A PNG of the viewport (or of ``clip``, in CSS pixels), written under a temporary name first."""
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        temporary = f"{path}.tmp-{os.getpid()}"
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)

    def close(self):
        if self.socket is not None:
            with contextlib.suppress(Exception):
                self.socket.close()
        # Chromium's helpers share its process group (start_new_session): end the group, not one process.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                self.process.poll()  # reap the leader so that the group can empty
                os.killpg(self.process.pid, 0)  # raises ProcessLookupError once the group is gone
                time.sleep(0.1)
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


# --------------------------------------------------------------------------- pages

# JavaScript helpers, put on the page once per navigation.
HELPERS = r"""
window.__shot = {
  // The collapsible section of the compare-runs page whose header reads `title`.
  section(title) {
    const sections = [...document.querySelectorAll('.CompareRunView > div')];
    return sections.find(el => el.innerText.split('\n')[0].trim() === title) || null;
  },
  clicked: new Set(),
  // Click `el` once (polling calls these helpers again until the page shows the result).
  clickOnce(key, el) { if (!this.clicked.has(key)) { this.clicked.add(key); el.click(); } },
  // Collapse a section by clicking its header (unless it is collapsed already).
  collapse(title) {
    const header = this.section(title).querySelector('[role="button"][aria-expanded]');
    if (header.getAttribute('aria-expanded') === 'true') this.clickOnce('collapse ' + title, header);
    return header.getAttribute('aria-expanded') === 'false';
  },
  // Switch a section's "Show diff only" on.
  diffOnly(title) {
    const toggle = document.querySelector(`[aria-label="${title} - Show diff only"]`);
    if (toggle.getAttribute('aria-checked') !== 'true') this.clickOnce('diff ' + title, toggle);
    return toggle.getAttribute('aria-checked') === 'true';
  },
  // Hide the navigation sidebar (one click on its toggle), so that the runs' columns get its width.
  sidebarHidden() {
    const left = document.querySelector('.CompareRunView').getBoundingClientRect().left;
    const toggle = document.querySelector('[aria-label="Toggle sidebar"]');
    if (left > 150 && toggle) this.clickOnce('sidebar', toggle);
    return left <= 150 || !toggle;
  },
  box(el) { const r = el.getBoundingClientRect(); return {x: r.left, y: r.top, width: r.width, height: r.height}; },
  // The multi-select after the label `label` ("Parameters:", "Metrics:") of the parallel coordinates panel.
  select(label) {
    const l = [...document.querySelectorAll('div')]
      .find(e => e.childElementCount === 0 && e.textContent.trim() === label);
    return l && l.nextElementSibling;
  },
  chosen(label) {
    return [...this.select(label).querySelectorAll('[class$="select-selection-item-content"]')].map(e => e.textContent);
  },
  // The box of the open dropdown's option `value`, or of the remove cross of the chosen `value`.
  option(value) {
    const o = [...document.querySelectorAll('[class*="select-item-option"]')].find(e => e.textContent.trim() === value);
    return o ? this.box(o) : null;
  },
  removeCross(label, value) {
    const item = [...this.select(label).querySelectorAll('[class$="select-selection-item"]')]
      .find(e => e.textContent.trim() === value);
    return item ? this.box(item.querySelector('[class$="select-selection-item-remove"]')) : null;
  },
};
true
"""


def union_box(boxes: list[dict], margin: int = 8) -> dict:
    left = max(0, min(b["x"] for b in boxes) - margin)
    top = max(0, min(b["y"] for b in boxes) - margin)
    right = min(WINDOW[0], max(b["x"] + b["width"] for b in boxes) + margin)
    bottom = max(b["y"] + b["height"] for b in boxes) + margin
    return {"x": left, "y": top, "width": right - left, "height": bottom - top}


def fit_sections(browser: Browser, titles: list[str]) -> dict:
    """Scroll the first section to the top, grow the viewport until all fit, and return their box."""
    for _ in range(3):
        browser.evaluate(f"__shot.section({json.dumps(titles[0])}).scrollIntoView({{block: 'start'}}); true")
        boxes = browser.evaluate(f"{json.dumps(titles)}.map(t => __shot.box(__shot.section(t)))")
        clip = union_box(boxes)
        if clip["y"] + clip["height"] <= browser.height:
            return clip
        browser.set_height(int(clip["y"] + clip["height"]) + 50)
        time.sleep(0.5)  # let the layout settle at the new size before measuring again
    return clip


def wait_compare_page(browser: Browser, n_runs: int):
    """Wait for the compare-runs page of ``n_runs`` runs, then close the MLflow Assistant panel over it."""
    browser.wait_for(
        f"document.body.innerText.includes('Comparing {n_runs} Runs') && !!document.querySelector('.CompareRunView')",
        f"the compare-runs page for {n_runs} runs",
    )
    browser.evaluate(HELPERS)
    close = "document.querySelector('[data-component-id=\"mlflow.assistant.chat_panel.close\"]')"
    browser.wait_for(f"({close} ? {close}.click() : 0, !{close})", "the page without the assistant panel")
    browser.wait_for("__shot.sidebarHidden()", "the page without the sidebar")
    time.sleep(0.5)  # the sidebar's animation; then the plot and the tables take the new width on a resize event
    browser.evaluate("window.dispatchEvent(new Event('resize')); true")


def shoot_compare_strategies(browser: Browser, url: str, n_runs: int, path: str):
    """Run details, then Parameters and Tags, each with "Show diff only" on (Metrics, Artifacts collapsed)."""
    browser.open(url)
    wait_compare_page(browser, n_runs)
    for title in ("Parameters", "Tags"):
        browser.wait_for(f"__shot.diffOnly('{title}')", f"'{title} - Show diff only' switched on")
    for title in ("Metrics", "Artifacts"):
        browser.wait_for(f"__shot.collapse('{title}')", f"the {title} section collapsed")
    browser.wait_for(
        "(s => s.innerText.trim().split('\\n').length > 2 || /No parameters to display/.test(s.innerText))"
        "(__shot.section('Parameters'))",
        "the parameters table",
    )
    time.sleep(0.5)  # the collapse animation
    browser.screenshot(path, fit_sections(browser, ["Run details", "Parameters", "Metrics", "Artifacts", "Tags"]))


AXES = (
    "(t => t.length ? t : null)([...document.querySelectorAll("
    "'.pcp-plot .parcoords .y-axis .axis-heading .axis-title')].map(e => e.textContent))"
)


def choose(browser: Browser, label: str, value: str):
    """Add ``value`` to the panel's multi-select ``label``: click it, type, click the option, close it."""
    browser.click(browser.evaluate(f"__shot.box(__shot.select({json.dumps(label)}))"))
    browser.type_text(value)
    browser.click(browser.wait_for(f"__shot.option({json.dumps(value)})", f"the option {value!r} of {label}"))
    browser.press("Escape", 27)
    browser.wait_for(f"__shot.chosen({json.dumps(label)}).includes({json.dumps(value)})", f"{value!r} chosen")


def shoot_parallel_coordinates(
    browser: Browser, url: str, n_runs: int, path: str, params: list[str], metric: str | None
):
    """The plot with an axis for every one of ``params`` (MLflow opens it with 3 at most) and ``metric``."""
    browser.open(url)
    wait_compare_page(browser, n_runs)
    browser.wait_for(AXES, "the parallel coordinates plot (no axes drawn)")
    for name in params:
        if name not in browser.evaluate("__shot.chosen('Parameters:')"):
            choose(browser, "Parameters:", name)
    if metric is not None:
        for other in browser.evaluate("__shot.chosen('Metrics:')"):
            if other != metric:
                browser.click(browser.evaluate(f"__shot.removeCross('Metrics:', {json.dumps(other)})"))
        if metric not in browser.evaluate("__shot.chosen('Metrics:')"):
            choose(browser, "Metrics:", metric)
    wanted = json.dumps(params + ([metric] if metric else []))
    axes = browser.wait_for(f"(a => a && {wanted}.every(n => a.includes(n)) ? a : null)({AXES})", "the chosen axes")
    time.sleep(1.0)  # Plotly draws the lines (WebGL) just after the axes
    browser.screenshot(path, fit_sections(browser, ["Visualizations"]))
    return axes


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the MLflow server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--experiment", required=True, help="experiment name")
    parser.add_argument("--out", required=True, help="folder for the PNGs (created if missing)")
    parser.add_argument("--chromium", help=f"Chromium executable (default: the first on PATH of {CHROMIUM_NAMES})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each page (default 60)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that Chromium is ended on SIGTERM too
    browser = None
    try:
        executable = find_chromium(args.chromium)
        client = MlflowClient(args.tracking_uri)
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise ScreenshotError(f"no experiment named {args.experiment!r} at {args.tracking_uri}")
        eid = experiment.experiment_id
        _, reproduce_children = latest_parent_with_children(client, eid, "reproduce")
        strategies = one_seed_per_strategy(reproduce_children)
        sweep_parent, trials = latest_parent_with_children(client, eid, "sweep")
        tuned = sorted(key for key in sweep_parent.data.params if key.startswith("space."))
        tuned = [key.removeprefix("space.") for key in tuned if key != "space.strategy"]
        objective = sweep_parent.data.params.get("objective")
        os.makedirs(args.out, exist_ok=True)

        browser = Browser(executable, args.timeout)
        path = os.path.join(args.out, "compare_strategies.png")
        shoot_compare_strategies(browser, compare_url(args.tracking_uri, strategies, eid), len(strategies), path)
        names = ", ".join(run_name(run) for run in strategies)
        print(f"{path}: {len(strategies)} runs ({names})")
        path = os.path.join(args.out, "sweep_parallel_coordinates.png")
        url = compare_url(args.tracking_uri, trials, eid)
        axes = shoot_parallel_coordinates(browser, url, len(trials), path, tuned, objective)
        print(f"{path}: {len(trials)} trials, axes {', '.join(axes)}")
    except ScreenshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # e.g. the tracking server is not reachable
        print(f"error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", file=sys.stderr)
        return 1
    finally:
        if browser is not None:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

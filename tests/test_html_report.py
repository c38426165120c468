"""The HTML report of an analysed run, its plots and the index page over all runs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from bench.report import build_report, plot_series, write_index, write_report
from bench.report.html import MAX_PLOTS, render_report

CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUNS = [f"_snoop_202403{day:02d}_0215_v2.1-{day}-g0a1b2c3" for day in range(1, 16)]
RUN = RUNS[-1]
REFERENCE = RUNS[2]
HOSTILE = "<script>alert(1)</script>"


def make_summary(run: str = RUN, changes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A summary shaped like ``bench.analysis.report._summary``'s, with one known regression
    (``N_IAdd_const`` up 30% from the reference) and one improvement."""
    if changes is None:
        changes = [
            change("interpreter.csv", "N_IAdd_const", 10.0, 13.0, against="reference"),
            change("michelson.csv", "N_IDrop_coeff", 5.0, 4.0),
        ]
    regressions = sum(1 for c in changes if c["direction"] == "regression")
    return {
        "format": 1,
        "run": run,
        "first": RUNS[0],
        "reference": REFERENCE,
        "previous": RUNS[RUNS.index(run) - 1] if run in RUNS[1:] else None,
        "runs_in_history": len(RUNS),
        "history_values": 1500,
        "detector": "legacy",
        "counts": {
            "files": 2,
            "parameters": 100,
            "regressions": regressions,
            "improvements": len(changes) - regressions,
            "new_parameters": 1,
            "removed_parameters": 0,
            "unreadable_files": 1,
        },
        "changes": changes,
        "new_parameters": ["interpreter.csv: N_INew_const"],
        "removed_parameters": [],
        "new_files": [],
        "removed_files": [],
        "problems": [
            {"run": run, "file": "broken.csv", "line": 3, "reason": "expected 2 columns, got 1"}
        ],
    }


def change(
    file: str, parameter: str, baseline: float, value: float, *, against: str = "previous"
) -> dict[str, Any]:
    """One entry of ``summary["changes"]`` as ``bench.analysis.report._alert_dict`` makes it."""
    relative = 100.0 * (value - baseline) / abs(baseline) if baseline else math.inf
    return {
        "file": file,
        "parameter": parameter,
        "direction": "regression" if value > baseline else "improvement",
        "against": against,
        "baseline_run": REFERENCE if against == "reference" else RUNS[-2],
        "baseline": baseline,
        "value": value,
        "relative_pct": relative,
        "change_pct": 200.0 * (value - baseline) / (abs(value) + abs(baseline)),
    }


def make_series(summary: dict[str, Any]) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """A history for every alerted parameter: flat at the baseline, at the value in the last
    run (slightly wobbling, so the line is not degenerate)."""
    series = {}
    runs = RUNS[: RUNS.index(summary["run"]) + 1]
    for c in summary["changes"]:
        values = [c["baseline"] * (1 + 0.01 * ((i * 7) % 3 - 1)) for i in range(len(runs))]
        values[-1] = c["value"]
        series[(c["file"], c["parameter"])] = list(zip(runs, values, strict=True))
    return series


class Links(HTMLParser):
    """The ``<img src>``, ``<a href>`` and tags of a page, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"] or "")
        elif tag == "a":
            self.links.append(values["href"] or "")


def parse(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def resolve(page: Path, ref: str) -> Path:
    """The file a relative link of ``page`` points to; fails on an absolute one."""
    parts = urlsplit(ref)
    assert not parts.scheme and not parts.netloc and not ref.startswith("/"), ref
    return (page.parent / unquote(parts.path)).resolve()


def write_run(root: Path, summary: dict[str, Any]) -> tuple[Path, list[Path]]:
    """What the watcher leaves in ``reports/<run>/``: summary.json and the HTML report."""
    report_dir = root / summary["run"]
    report_dir.mkdir(parents=True)
    (report_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return write_report(report_dir, summary, make_series(summary))


def test_a_known_regression_has_its_plot_on_the_page(tmp_path: Path) -> None:
    """The regression's PNG exists, is a small non-empty PNG and the page shows it by a relative
    path that resolves to it; the plots come regressions first."""
    page, plots = write_run(tmp_path, make_summary())

    assert [p.name for p in plots] == [
        "01-interpreter-N_IAdd_const.png",
        "02-michelson-N_IDrop_coeff.png",
    ]
    regression = plots[0]
    data = regression.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert 5_000 < len(data) < 150_000
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (800, 400)
    assert regression.parent == page.parent / "plots"

    html = parse(page)
    assert [resolve(page, src) for src in html.images] == [p.resolve() for p in plots]
    text = page.read_text(encoding="utf-8")
    assert "N_IAdd_const" in text and "+30.0%" in text and "−20.0%" in text
    assert "broken.csv" in text and "N_INew_const" in text


def test_plot_is_deterministic_and_has_no_metadata(tmp_path: Path) -> None:
    """The same history gives the same bytes, with no Software/date text chunk."""
    kwargs: dict[str, Any] = {
        "title": "N_IAdd_const (interpreter.csv)",
        "runs": RUNS,
        "values": [10.0] * 12 + [math.nan, 13.0, 13.1],
        "reference": REFERENCE,
        "change_at": RUNS[-2],
        "baseline": 10.0,
    }
    first = plot_series(tmp_path / "a.png", **kwargs).read_bytes()
    second = plot_series(tmp_path / "b.png", **kwargs).read_bytes()
    assert first == second
    assert b"Software" not in first and b"matplotlib" not in first.lower()
    assert b"tIME" not in first
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_untrusted_names_are_escaped(tmp_path: Path) -> None:
    """A parameter named ``<script>alert(1)</script>`` and a hostile reason are shown as text,
    never as markup, and the plot's file name is safe."""
    hostile = change("m\"ichel'son.csv", HOSTILE, 5.0, 9.0)
    hostile["reason"] = '<img src=x onerror="alert(2)">'
    summary = make_summary(changes=[hostile])
    summary["problems"] = [{"run": RUN, "file": "<b>x.csv</b>", "line": 1, "reason": HOSTILE}]
    summary["new_parameters"] = [f"a.csv: {HOSTILE}"]
    page, plots = write_run(tmp_path, summary)

    text = page.read_text(encoding="utf-8")
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=" in text
    assert "<b>x.csv</b>" not in text
    html = parse(page)
    assert "script" not in html.tags and "b" not in html.tags
    assert len(html.images) == 1  # the plot, not the reason
    [plot] = plots
    assert plot.parent == page.parent / "plots"
    assert set(plot.name) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
    )


def test_score_and_reason_columns_appear_only_when_present() -> None:
    """A detector's ``score`` and ``reason`` are shown when the changes carry them."""
    plain = make_summary()
    without = render_report(build_report(plain, {}))
    assert '<th class="reason">' not in without and '<th class="score"' not in without

    scored = make_summary()
    scored["changes"][0] |= {"score": 12.345, "reason": "rose 30% in 3 runs, 12x its noise"}
    page = render_report(build_report(scored, {}))
    assert '<th class="reason">' in page and '<th class="score"' in page
    assert '<td class="num">12.3</td>' in page and "rose 30% in 3 runs, 12x its noise" in page


def test_plots_are_regressions_first_and_capped() -> None:
    """With more alerts than the cap, the regressions get the plots first, in the summary's
    order, and every alert is still listed."""
    changes = [change("f.csv", f"improved_{i}", 10.0, 5.0) for i in range(5)]
    changes += [change("f.csv", f"worse_{i}", 10.0, 20.0 + i) for i in range(MAX_PLOTS + 3)]
    summary = make_summary(changes=changes)
    report = build_report(summary, make_series(summary))

    names = [p["parameter"] for p in report["plots"]]
    assert names == [f"worse_{i}" for i in range(MAX_PLOTS)]
    assert [p["path"] for p in report["plots"]][:2] == [
        "plots/01-f-worse_0.png",
        "plots/02-f-worse_1.png",
    ]
    assert len(report["alerts"]) == len(changes)
    assert report["alerts"][0]["parameter"] == "worse_0"
    assert report["alerts"][-1]["direction"] == "improvement"
    assert report["alerts_without_plot"] == len(changes) - MAX_PLOTS
    first = report["plots"][0]
    assert first["reference"] == REFERENCE and first["change_at"] == RUN
    assert first["baseline"] == 10.0


def test_rewriting_a_report_removes_plots_no_longer_shown(tmp_path: Path) -> None:
    """A report rendered again with fewer alerts leaves no stale plot behind."""
    summary = make_summary()
    _, before = write_run(tmp_path, summary)
    assert len(before) == 2
    summary["changes"] = summary["changes"][:1]
    page, after = write_report(tmp_path / RUN, summary, make_series(summary))
    assert sorted((page.parent / "plots").iterdir()) == after
    assert len(parse(page).images) == 1


def test_index_lists_runs_newest_first_with_working_links(tmp_path: Path) -> None:
    """The dashboard lists every analysed run newest first (a rerun before its original) and
    each link, relative, opens that run's page; the page links back to the dashboard."""
    root = tmp_path / "reports"
    for run in (RUNS[5], RUNS[14], RUNS[9]):  # not in order
        write_run(root, make_summary(run))
    rerun = root / f"{RUNS[9]}.rerun-1"
    rerun.mkdir()
    (rerun / "summary.json").write_text(json.dumps(make_summary(RUNS[9])), encoding="utf-8")
    (root / RUNS[12]).mkdir()  # being analysed: no summary.json yet
    (root / "notes").mkdir()  # not a run
    (root / "notes" / "summary.json").write_text("{}", encoding="utf-8")

    index = write_index(root)

    html = parse(index)
    assert html.links == [
        f"{RUNS[14]}/index.html",
        f"{RUNS[9]}.rerun-1/summary.json",  # no page: its summary
        f"{RUNS[9]}/index.html",
        f"{RUNS[5]}/index.html",
    ]
    for link in html.links:
        assert resolve(index, link).is_file(), link
    page = root / RUNS[14] / "index.html"
    assert resolve(page, "../index.html") == index.resolve()
    assert "../index.html" in parse(page).links
    text = index.read_text(encoding="utf-8")
    assert "2024-03-15 02:15" in text and "(rerun 1)" in text


def test_index_lists_a_run_whose_summary_is_unreadable(tmp_path: Path) -> None:
    """A corrupt summary.json is shown as such in the dashboard instead of breaking it."""
    write_run(tmp_path, make_summary(RUNS[3]))
    broken = tmp_path / RUNS[4]
    broken.mkdir()
    (broken / "summary.json").write_text("{not json", encoding="utf-8")

    text = write_index(tmp_path).read_text(encoding="utf-8")

    assert f"{RUNS[4]}/summary.json" in text and "unreadable summary.json" in text
    assert text.index(RUNS[4]) < text.index(RUNS[3])


def test_importing_the_package_loads_neither_matplotlib_nor_jinja2() -> None:
    """``import bench.report`` stays cheap for a watcher tick that finds nothing new."""
    code = (
        "import sys, bench.report; "
        "print(sorted(m for m in ('matplotlib', 'jinja2', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


# --- in a real browser ----------

#: Injected into a copy of the page: records script errors, resources that failed to load
#: (capture phase) and calls to alert() (an injected script), then, once loaded, every
#: image's natural size, into the DOM.
HARNESS = """<script>
window.__errors = [];
window.alert = function (m) { window.__errors.push("alert: " + m); };
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__errors.push(t && t.tagName ? "failed to load " + (t.src || t.href) : "js: " + e.message);
}, true);
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute("src"), w: img.naturalWidth, h: img.naturalHeight,
            complete: img.complete};
  });
  var out = document.createElement("pre");
  out.id = "harness-result";
  out.textContent = JSON.stringify({errors: window.__errors, images: images,
    alertRows: document.querySelectorAll("#alert-table tbody tr").length});
  document.body.appendChild(out);
});
</script>"""


def run_chromium(tmp: Path, name: str, *args: str, timeout: float = 90) -> tuple[str, str]:
    """Run headless Chromium in its own process group (killed as a whole on any exit);
    return its stdout and stderr."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is not installed: the HTML report must be checked in a real browser "
            "(apt-get install chromium)",
            pytrace=False,
        )
    out, err = tmp / f"{name}.stdout", tmp / f"{name}.stderr"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / f'profile-{name}'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stdout_text = out.read_text(encoding="utf-8", errors="replace")
    stderr_text = err.read_text(encoding="utf-8", errors="replace")
    assert code == 0, f"chromium exited with {code}:\n{stderr_text[-3000:]}"
    return stdout_text, stderr_text


def console_messages(stderr: str) -> list[str]:
    """What the page wrote to the console (Chromium logs it as ``INFO:CONSOLE``)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chromium loads the report without errors (a hostile name stays text), with the alert
    table and every plot, and takes a screenshot of it for a person to look at."""
    root = tmp_path / "reports"
    write_run(root, make_summary(RUNS[13]))
    summary = make_summary(
        changes=[
            change("interpreter.csv", "N_IAdd_const", 10.0, 13.0, against="reference"),
            change("michelson.csv", "N_IDrop_coeff", 5.0, 4.0),
            change("michelson.csv", HOSTILE, 2.0, 1.5),
        ]
    )
    page, plots = write_run(root, summary)
    write_index(root)
    work = tmp_path / "chromium"
    work.mkdir()

    # 1. the DOM after load, with the harness in a copy of the page next to it
    harness = page.with_name("_harness.html")
    harness.write_text(
        page.read_text(encoding="utf-8").replace("<head>", "<head>\n" + HARNESS, 1),
        encoding="utf-8",
    )
    dom, stderr = run_chromium(work, "dom", "--dump-dom", harness.as_uri())
    assert 'id="alert-table"' in dom
    assert dom.count("<img ") == len(plots) == 3
    marker = '<pre id="harness-result">'
    assert marker in dom, f"the page did not finish loading:\n{dom[-2000:]}"
    result = json.loads(unescape(dom.split(marker, 1)[1].split("</pre>", 1)[0]))
    assert result["errors"] == []
    assert result["alertRows"] == 3
    assert [(i["src"], i["w"], i["h"]) for i in result["images"]] == [
        (f"plots/{p.name}", 800, 400) for p in plots
    ]
    assert console_messages(stderr) == []

    # 2. the page itself, as a person sees it
    shot = work / "report.png"
    _, stderr = run_chromium(
        work, "shot", f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()
    )
    assert console_messages(stderr) == []
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert struct.unpack(">II", data[16:24]) == (1280, 2000)
    assert len(data) > 50_000  # text, tables and plots; a blank page is a few KB

    import matplotlib.image
    import numpy as np

    pixels = np.rint(matplotlib.image.imread(shot)[..., :3] * 255).astype(np.uint32)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    colours = np.unique((red << 16) | (green << 8) | blue)
    assert len(colours) > 200  # anti-aliased text and plots, not a flat page
    assert ((red > 180) & (green < 80) & (blue < 80)).any()  # the regression in red
    with capsys.disabled():
        print(f"\nscreenshot of the HTML report: {shot}")

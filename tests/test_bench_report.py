"""The bench's report files on fake tables and jobs: every file is written (atomically, no leftovers),
the markdown has the rows and the image link, jobs.csv one row per job, the HTML escapes every cell,
references nothing outside itself and embeds its plots; in a headless Chromium the page loads without
a script error, its images load, its tables sort numerically, and its screenshot is not blank."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from miner.benchmark._report import CSV_FIRST, cell, write_report
from miner.errors import MinerError

RED = (1.0, 0.0, 0.0)  # the test plot's fill, looked for in the screenshot
TH_RGB = (0xDC, 0xE6, 0xF5)  # the table header's background in the page's CSS


def _png(path, colour=RED):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(3, 1.5), dpi=60)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.add_patch(Rectangle((0, 0), 1, 1, color=colour))
    ax.set_axis_off()
    fig.savefig(path)
    return path


def _job(i, name, test):
    return {
        "id": f"sst-2|{name}|{13 + i}|16",
        "task": "sst-2",
        "name": name,
        "family": "discrete" if name == "optuna" else "baseline",
        "oracle": False,
        "seed": 13 + i,
        "k": 16,
        "metric": "accuracy",
        "test": test,
        "correct": "0110" * 3,
        "n_test": 12,
        "dev": 0.9,
        "train": None,
        "reference_test": 0.8,
        "best_candidate_test": None,
        "pick": {
            "prompt": {
                "template": '{sentence} It was {mask}, "really".',
                "verbalizer": {"0": ["bad"], "1": ["good"]},
            },
            "reason": "best by dev, the guard, kept",
        },
        "guard_fired": i % 2 == 0,
        "n_evaluations": 57,
        "forward_passes": 198,
        "backward_passes": 12,
        "forward_equivalents": 231.6,
        "budget": 240,
        "seconds": 312.5,
        "test_seconds": 40.2,
        "stopped_by_budget": None,
        "curve": [[2, 0.5], [4, 0.75]],
        "extra_field": {"a": 1},
    }


TABLES = [
    {
        "title": "Test accuracy by task",
        "columns": ["row", "family", "sst-2", "seconds / job"],
        "rows": [
            ["optuna", "discrete", "81.2 ± 1.3 (+0.4 [-1.0, +2.0])", 312.5],
            ["<b>x</b>", "baseline", "9.5 ± 0.2", None],
            ["zero-shot | pipe", "baseline", "–", 1234567.0],
            ["manual (best by dev)", "baseline", "100.0 ± 2.0", 3],
        ],
        "note": "In brackets: the paired difference & its interval.",
    },
    {"title": "Cost model", "columns": ["model", "backward"], "rows": [["tiny", "2.31"]]},
]
META = {
    "command": "miner bench configs/bench_quick.yaml",
    "machine": "test machine",
    "commit": "abc1234",
    "date": "2025-01-01T00:00:00Z",
    "duration": "1.0 min",
    "config": "name: quick\ntasks: [sst-2]\n",
    "jobs": "3",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    plot = _png(out / "accuracy.png")
    jobs = [_job(0, "optuna", 0.84), _job(1, "optuna", 0.82), _job(0, "zero-shot", 0.5)]
    files = write_report(
        out,
        title="miner bench: <quick>",
        meta=META,
        tables=TABLES,
        plots=[{"title": "Test accuracy by row", "path": plot, "caption": "Points: seeds."}],
        jobs=jobs,
        notes=["Every job ran on the same splits."],
    )
    return out, files, jobs


def test_every_file_is_written_and_nothing_else(report):
    out, files, _ = report
    assert set(files) == {"md", "html", "csv"}
    assert all(p.is_file() and p.parent == out and p.stat().st_size > 0 for p in files.values())
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "jobs.csv", "report.html", "report.md"]


def test_markdown_has_the_meta_the_rows_and_the_image_link(report):
    _, files, _ = report
    md = files["md"].read_text()
    assert md.startswith("# miner bench: &lt;quick&gt;\n")
    assert "`miner bench configs/bench_quick.yaml`" in md and "```yaml\nname: quick" in md
    assert "| row | family | sst-2 | seconds / job |" in md
    assert "| optuna | discrete | 81.2 ± 1.3 (+0.4 [-1.0, +2.0]) | 312.5 |" in md
    assert "| &lt;b&gt;x&lt;/b&gt; | baseline | 9.5 ± 0.2 | – |" in md
    assert "| zero-shot \\| pipe | baseline | – | 1,234,567 |" in md  # a pipe would split the cell
    assert "|---|---|---:|---:|" in md
    assert "![Test accuracy by row](accuracy.png)" in md and "Points: seeds." in md
    assert "- Every job ran on the same splits." in md


def test_csv_has_one_row_per_job_and_every_field(report):
    _, files, jobs = report
    rows = list(csv.DictReader(io.StringIO(files["csv"].read_text())))
    assert len(rows) == len(jobs)
    header = next(csv.reader(io.StringIO(files["csv"].read_text())))
    assert header == [*CSV_FIRST, "extra_field"]
    r = rows[0]
    assert r["id"] == "sst-2|optuna|13|16" and float(r["test"]) == 0.84 and r["train"] == ""
    assert r["correct"] == "011001100110" and json.loads(r["curve"]) == [[2, 0.5], [4, 0.75]]
    assert r["pick_template"] == '{sentence} It was {mask}, "really".'
    assert r["pick_reason"] == "best by dev, the guard, kept"
    assert r["guard_fired"] == "true" and rows[1]["guard_fired"] == "false"
    assert json.loads(r["extra_field"]) == {"a": 1}


def test_html_escapes_every_cell_and_is_self_contained(report):
    _, files, _ = report
    page = files["html"].read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "<title>miner bench: &lt;quick&gt;</title>" in page
    assert "paired difference &amp; its interval" in page
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.IGNORECASE)
    assert refs and all(not r.lower().startswith(("http:", "https:", "//", "file:")) for r in refs)
    assert "http://" not in page and "https://" not in page
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert len(imgs) == 1 and imgs[0].startswith("data:image/png;base64,iVBORw0KGgo")
    assert 'data-status="loading"' in page and "window.onerror" in page


def test_cell_formats_numbers():
    assert [cell(x) for x in (None, "a", 3, 12345, 0.5, 231.6, 1234567.8, 2.0, float("nan"), True)] == [
        "–",
        "a",
        "3",
        "12,345",
        "0.5",
        "231.6",
        "1,234,568",
        "2",
        "–",
        "yes",
    ]
    assert cell(np.float64(0.12345)) == "0.1235" and cell(np.int64(7)) == "7"


def test_bad_input_is_a_one_line_error(tmp_path):
    kw = dict(title="t", meta={}, plots=[], jobs=[])
    with pytest.raises(MinerError, match="row 1 has 1 cells for 2 columns"):
        write_report(tmp_path, tables=[{"title": "x", "columns": ["a", "b"], "rows": [["1"]]}], **kw)
    (tmp_path / "no.png").write_text("not a png")
    with pytest.raises(MinerError, match="is not a PNG"):
        write_report(tmp_path, tables=[], **{**kw, "plots": [{"title": "p", "path": tmp_path / "no.png"}]})
    outside = _png(tmp_path / "outside.png")
    with pytest.raises(MinerError, match="not inside the report folder"):
        write_report(tmp_path / "sub", tables=[], **{**kw, "plots": [{"title": "p", "path": outside}]})
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "report.md").exists()


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    files = write_report(tmp_path, title="first", meta={}, tables=[], plots=[], jobs=[])
    before = files["md"].read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("miner.benchmark._report.os.replace", boom)
    with pytest.raises(OSError):
        write_report(tmp_path, title="second", meta={}, tables=[], plots=[], jobs=[])
    assert files["md"].read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.csv", "report.html", "report.md"]


# ---------------------------------------------------------------------------------- in a browser


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip(
            "no chromium, chromium-browser or google-chrome on PATH (.ci/run installs Debian's chromium)"
        )
    return exe


def _browse(exe, profile, *args):
    """Run headless Chromium; kill its whole process group if it hangs past 60 s."""
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *args,
    ]
    env = {**os.environ, "HOME": str(profile)}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within 60 s: {' '.join(cmd)}")
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}: {stderr[-2000:]}"
    return stdout


def _status(dom):
    m = re.search(r'<body[^>]*\bdata-status="([^"]*)"', dom)
    return m.group(1) if m else None


@pytest.mark.process
@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_the_page_in_a_headless_browser(report, tmp_path):
    exe = _chromium()
    out, files, _ = report
    url = files["html"].resolve().as_uri()

    # loads without a script error, its image loaded, and a click on the first numeric header sorts
    # "81.2", "9.5", "–", "100.0" numerically (text order would put "100.0" first), the dash last
    dom = _browse(exe, tmp_path / "p1", "--virtual-time-budget=5000", "--dump-dom", url + "#selftest")
    assert _status(dom) == "ok", f"page status: {_status(dom)!r}"
    assert 'data-sorted="9.5 ± 0.2"' in dom
    rows = re.findall(r"<tr><td>([^<]*)</td>", dom)
    assert rows[:4] == ["&lt;b&gt;x&lt;/b&gt;", "optuna", "manual (best by dev)", "zero-shot | pipe"]

    # the load check can fail: a broken image is reported, not "ok"
    broken = out / "broken.html"
    broken.write_text(re.sub(r"base64,[^\"]+", "base64,AAAA", files["html"].read_text()))
    try:
        dom = _browse(exe, tmp_path / "p2", "--virtual-time-budget=5000", "--dump-dom", broken.as_uri())
    finally:
        broken.unlink()
    assert (_status(dom) or "").startswith("error: image did not load"), _status(dom)

    # the screenshot is not blank: the table's header background and the plot's red are on it
    shot = tmp_path / "shot.png"
    _browse(
        exe,
        tmp_path / "p3",
        "--virtual-time-budget=5000",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        url,
    )
    assert shot.is_file()
    from matplotlib.image import imread

    img = (imread(shot)[..., :3] * 255).round().astype(int)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    header = np.all(np.abs(img - np.array(TH_RGB)) <= 2, axis=-1)
    assert header.sum() > 2000, "no table header on the screenshot"
    ys, _ = np.nonzero(header)
    table = img[ys.min() : ys.min() + 120]  # the header and the first rows under it
    assert table.std() > 10 and len(np.unique(table.reshape(-1, 3), axis=0)) > 10
    red = (img[..., 0] > 230) & (img[..., 1] < 30) & (img[..., 2] < 30)
    assert red.sum() > 1000, "the embedded plot is not on the screenshot"

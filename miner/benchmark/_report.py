"""The report files of a bench: ``report.md`` (GitHub-flavoured markdown), ``report.html`` (one
self-contained page: plots as data URIs, inline CSS, sortable tables, opens offline) and ``jobs.csv``.

Every file is written to a temporary file in the output folder and moved into place, so that a bench
killed mid-write leaves the previous report (or none), never half of one.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import numbers
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from miner.errors import MinerError

MISSING = "–"  # what an empty cell shows (the tables' builder uses the same dash)
META_ORDER = ("command", "machine", "commit", "date", "duration")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# jobs.csv: the spec's fields first, in its order, then whatever else the records carry
CSV_FIRST = (
    "id",
    "task",
    "name",
    "family",
    "oracle",
    "seed",
    "k",
    "metric",
    "test",
    "n_test",
    "dev",
    "train",
    "reference_test",
    "best_candidate_test",
    "pick_template",
    "pick_reason",
    "guard_fired",
    "n_evaluations",
    "forward_passes",
    "backward_passes",
    "forward_equivalents",
    "budget",
    "seconds",
    "test_seconds",
    "stopped_by_budget",
    "correct",
    "curve",
)

# the same rule as the page's script: a cell is numeric when it starts with a number
# ("81.2 ± 1.3", "+2.5 [+0.1, +4.0]", "1,234"), a leading "[" or "(" allowed
_NUMERIC = re.compile(r"^\s*[\[(]?\s*[+\-\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+\-]?\d+)?", re.IGNORECASE)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232b;background:#fff;
margin:0 auto;padding:16px 24px 48px;max-width:1400px}
h1{font-size:22px;margin:8px 0 12px}h2{font-size:17px;margin:28px 0 8px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0 0 8px}
dl.meta dt{font-weight:600;color:#4a5563}dl.meta dd{margin:0}
pre,code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:#f5f6f8;border:1px solid #dde1e6;padding:8px 10px;overflow-x:auto;margin:4px 0}
nav ul{margin:4px 0;padding-left:20px}
.wrap{overflow-x:auto}
table{border-collapse:collapse;margin:4px 0}
th,td{border:1px solid #c9d1db;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#dce6f5;cursor:pointer;user-select:none;white-space:nowrap;position:sticky;top:0}
th:hover{background:#c8d7ef}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
tbody tr:nth-child(even){background:#f3f5f8}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
p.note{color:#4a5563;font-size:13px;margin:4px 0 0;max-width:1000px}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #dde1e6}
figcaption{color:#4a5563;font-size:13px;max-width:1000px}
"""

# Sortable tables and a load check a headless browser can read: body[data-status] is "ok" once every
# image has loaded and no script error happened, "error: ..." otherwise. With the URL hash #selftest
# the page clicks the first numeric header and records the first row's cell in body[data-sorted].
JS = r"""
(function () {
  "use strict";
  var body = document.body, failed = false;
  function fail(msg) { failed = true; body.dataset.status = "error: " + msg; }
  window.onerror = function (msg) { fail(String(msg)); };
  var NUM = /^\s*[\[(]?\s*([+\-\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+\-]?\d+)?)/i;
  function num(text) {
    var m = NUM.exec(text.replace(/(\d),(?=\d{3}(?!\d))/g, "$1"));
    return m ? parseFloat(m[1].replace("\u2212", "-")) : null;
  }
  function blank(text) { text = text.trim(); return text === "" || text === "\u2013" || text === "-"; }
  function cellText(row, col) { var c = row.cells[col]; return c ? c.textContent : ""; }
  function isNumeric(table, col) {
    var rows = table.tBodies[0].rows, seen = 0;
    for (var i = 0; i < rows.length; i++) {
      var t = cellText(rows[i], col);
      if (blank(t)) continue;
      if (num(t) === null) return false;
      seen++;
    }
    return seen > 0;
  }
  function sortTable(table, col, descending) {
    var tbody = table.tBodies[0], numeric = isNumeric(table, col), sign = descending ? -1 : 1;
    var rows = Array.prototype.slice.call(tbody.rows).map(function (r, i) {
      var t = cellText(r, col);
      return {row: r, i: i, blank: blank(t), key: numeric ? num(t) : t.trim().toLowerCase()};
    });
    rows.sort(function (a, b) {
      if (a.blank !== b.blank) return a.blank ? 1 : -1;  // empty cells last either way
      if (a.blank) return a.i - b.i;
      var c = numeric ? a.key - b.key : a.key.localeCompare(b.key);
      return c ? sign * c : a.i - b.i;
    });
    rows.forEach(function (r) { tbody.appendChild(r.row); });
    var ths = table.tHead.rows[0].cells;
    for (var j = 0; j < ths.length; j++) ths[j].removeAttribute("aria-sort");
    ths[col].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  window.minerSortTable = sortTable;
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      function go() { sortTable(table, col, th.getAttribute("aria-sort") === "ascending"); }
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
    });
  });
  if (location.hash === "#selftest") {
    var done = false;
    Array.prototype.forEach.call(tables, function (table) {
      if (done) return;
      var ths = table.tHead.rows[0].cells;
      for (var col = 0; col < ths.length && !done; col++) {
        if (!isNumeric(table, col)) continue;
        ths[col].click();
        body.dataset.sorted = cellText(table.tBodies[0].rows[0], col).trim();
        done = true;
      }
    });
    if (!done) body.dataset.sorted = "no numeric column";
  }
  function finish() {
    if (failed) return;
    var imgs = document.images;
    for (var i = 0; i < imgs.length; i++) {
      if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { fail("image did not load: " + imgs[i].alt); return; }
    }
    body.dataset.status = "ok";
  }
  // the window's load event comes after every image has loaded or failed
  if (document.readyState === "complete") finish(); else window.addEventListener("load", finish);
})();
"""


def write_report(
    out: Path,
    *,
    title: str,
    meta: Mapping[str, Any],
    tables: Sequence[Mapping[str, Any]],
    plots: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    notes: Iterable[str] = (),
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``jobs.csv`` into ``out``; returns their paths.

    ``tables``: ``{"title", "columns", "rows", "note"?}``; ``plots``: ``{"title", "path", "caption"}``
    with ``path`` a PNG inside ``out``; ``jobs``: the bench's job records (one CSV row each).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = [str(n) for n in notes]
    checked = [_check_table(t, i) for i, t in enumerate(tables)]
    figures = [_check_plot(p, out) for p in plots]
    files = {"md": out / "report.md", "html": out / "report.html", "csv": out / "jobs.csv"}
    _atomic_write(files["csv"], _jobs_csv(jobs))
    _atomic_write(files["md"], _markdown(title, meta, checked, figures, notes))
    _atomic_write(files["html"], _html(title, meta, checked, figures, notes))
    return files


# ----------------------------------------------------------------------------------------- checks


def _check_table(t: Mapping[str, Any], i: int) -> dict[str, Any]:
    name = t.get("title", f"#{i + 1}")
    columns = [str(c) for c in t.get("columns", ())]
    if not columns:
        raise MinerError(f"report table {name!r} has no columns")
    rows = [list(r) for r in t.get("rows", ())]
    for j, r in enumerate(rows):
        if len(r) != len(columns):
            raise MinerError(
                f"report table {name!r}: row {j + 1} has {len(r)} cells for {len(columns)} columns"
            )
    return {
        "title": str(name),
        "columns": columns,
        "rows": [[cell(c) for c in r] for r in rows],
        "note": t.get("note"),
    }


def _check_plot(p: Mapping[str, Any], out: Path) -> dict[str, Any]:
    path = Path(p["path"])
    try:
        rel = path.resolve().relative_to(out.resolve())
    except ValueError:
        raise MinerError(f"report plot {str(path)!r} is not inside the report folder {str(out)!r}") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MinerError(f"report plot {str(path)!r} cannot be read ({exc.strerror or exc})") from None
    if not data.startswith(PNG_MAGIC):
        raise MinerError(f"report plot {str(path)!r} is not a PNG file")
    return {
        "title": str(p.get("title", rel.stem)),
        "caption": str(p.get("caption") or ""),
        "rel": rel.as_posix(),
        "png": data,
    }


def cell(x: Any) -> str:
    """One table cell as text: strings as they are, numbers formatted, None as a dash."""
    if x is None:
        return MISSING
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    if isinstance(x, numbers.Real):
        f = float(x)
        if math.isnan(f):
            return MISSING
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        if f.is_integer() and abs(f) < 1e15:
            return cell(int(f))
        if abs(f) >= 10_000:
            return f"{f:,.0f}"
        return f"{f:.4g}" if abs(f) >= 1e-3 else f"{f:.2e}"
    return str(x)


def _numeric(text: str) -> bool:
    return bool(_NUMERIC.match(text))


# ---------------------------------------------------------------------------------------- jobs.csv


def _pick_template(pick: Any) -> str:
    prompt = pick.get("prompt") if isinstance(pick, Mapping) else None
    if not isinstance(prompt, Mapping):
        return ""
    if "ensemble" in prompt:
        members = [m.get("template", "") for m in prompt["ensemble"] if isinstance(m, Mapping)]
        return f"ensemble of {len(members)}: " + " || ".join(members)
    return str(prompt.get("template", ""))


def _csv_value(key: str, v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if key == "correct" and isinstance(v, list | tuple):  # the spec's string, from a list of 0/1
        return "".join(str(int(b)) for b in v)
    if isinstance(v, str | numbers.Number):
        return v
    return json.dumps(v, separators=(",", ":"), default=str)


def _jobs_csv(jobs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for j in jobs:
        row = {k: v for k, v in j.items() if k != "pick"}
        pick = j.get("pick")
        row["pick_template"] = _pick_template(pick)
        row["pick_reason"] = pick.get("reason", "") if isinstance(pick, Mapping) else ""
        rows.append(row)
    extra: list[str] = []
    for r in rows:
        extra.extend(k for k in r if k not in CSV_FIRST and k not in extra)
    fields = [*CSV_FIRST, *extra]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(k, r.get(k)) for k in fields})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- markdown


def _md_text(s: str) -> str:
    """Markdown-safe inline text: no raw HTML, no broken pipe tables, one line."""
    s = html.escape(s, quote=False).replace("|", "\\|")
    return " ".join(s.splitlines())


def _fence(text: str, lang: str = "") -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _meta_items(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    keys = [k for k in META_ORDER if k in meta] + [k for k in meta if k not in META_ORDER and k != "config"]
    return [(k, str(meta[k])) for k in keys]


def _markdown(
    title: str, meta: Mapping[str, Any], tables: list[dict], figures: list[dict], notes: list[str]
) -> str:
    lines = [f"# {_md_text(title)}", ""]
    for k, v in _meta_items(meta):
        if "\n" in v.strip():
            lines += [f"- **{_md_text(k)}**:", "", _fence(v), ""]
        elif k in ("command", "commit"):
            lines.append(f"- **{_md_text(k)}**: {_fence_inline(v)}")
        else:
            lines.append(f"- **{_md_text(k)}**: {_md_text(v)}")
    if "config" in meta:
        lines += [
            "",
            "<details><summary>config</summary>",
            "",
            _fence(str(meta["config"]), "yaml"),
            "",
            "</details>",
        ]
    lines.append("")
    for t in tables:
        lines += [f"## {_md_text(t['title'])}", ""]
        lines.append("| " + " | ".join(_md_text(c) for c in t["columns"]) + " |")
        lines.append(
            "|" + "|".join("---:" if _numeric_column(t, i) else "---" for i in range(len(t["columns"]))) + "|"
        )
        lines += ["| " + " | ".join(_md_text(c) for c in r) + " |" for r in t["rows"]]
        if t.get("note"):
            lines += ["", _md_text(str(t["note"]))]
        lines.append("")
    for f in figures:
        alt = _md_text(f["title"]).replace("[", "\\[").replace("]", "\\]")
        lines += [f"## {_md_text(f['title'])}", "", f"![{alt}]({quote(f['rel'])})", ""]
        if f["caption"]:
            lines += [_md_text(f["caption"]), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {_md_text(n)}" for n in notes] + [""]
    return "\n".join(lines)


def _fence_inline(s: str) -> str:
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def _numeric_column(t: Mapping[str, Any], i: int) -> bool:
    vals = [r[i] for r in t["rows"] if r[i].strip() not in ("", MISSING, "-")]
    return bool(vals) and all(_numeric(v) for v in vals)


# -------------------------------------------------------------------------------------------- html


def _html(
    title: str, meta: Mapping[str, Any], tables: list[dict], figures: list[dict], notes: list[str]
) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # nothing outside this file may load: the page must open offline and the same everywhere
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head>",
        '<body data-status="loading">',
        f"<h1>{e(title)}</h1>",
        '<dl class="meta">',
    ]
    for k, v in _meta_items(meta):
        if "\n" in v.strip():
            parts.append(f"<dt>{e(k)}</dt><dd><pre>{e(v)}</pre></dd>")
        elif k in ("command", "commit"):
            parts.append(f"<dt>{e(k)}</dt><dd><code>{e(v)}</code></dd>")
        else:
            parts.append(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>")
    parts.append("</dl>")
    if "config" in meta:
        parts.append(f"<details><summary>config</summary><pre>{e(str(meta['config']))}</pre></details>")
    sections = [(f"t{i + 1}", t["title"]) for i, t in enumerate(tables)]
    sections += [(f"p{i + 1}", f["title"]) for i, f in enumerate(figures)]
    if notes:
        sections.append(("notes", "Notes"))
    if len(sections) > 1:
        parts.append(
            "<nav><ul>" + "".join(f'<li><a href="#{a}">{e(s)}</a></li>' for a, s in sections) + "</ul></nav>"
        )
    for i, t in enumerate(tables):
        numeric = [_numeric_column(t, c) for c in range(len(t["columns"]))]
        parts.append(f'<h2 id="t{i + 1}">{e(t["title"])}</h2><div class="wrap"><table class="sortable">')
        parts.append(
            "<thead><tr>"
            + "".join(f'<th scope="col">{e(c)}</th>' for c in t["columns"])
            + "</tr></thead><tbody>"
        )
        for r in t["rows"]:
            tds = "".join(
                f'<td class="num">{e(c)}</td>' if numeric[j] else f"<td>{e(c)}</td>" for j, c in enumerate(r)
            )
            parts.append(f"<tr>{tds}</tr>")
        parts.append("</tbody></table></div>")
        if t.get("note"):
            parts.append(f'<p class="note">{e(str(t["note"]))}</p>')
    for i, f in enumerate(figures):
        uri = "data:image/png;base64," + base64.b64encode(f["png"]).decode("ascii")
        parts.append(f'<h2 id="p{i + 1}">{e(f["title"])}</h2><figure><img src="{uri}" alt="{e(f["title"])}">')
        parts.append(f"<figcaption>{e(f['caption'])}</figcaption></figure>" if f["caption"] else "</figure>")
    if notes:
        parts.append('<h2 id="notes">Notes</h2><ul>' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts += [f"<script>{JS}</script>", "</body></html>", ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ writes


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the report private to its writer
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise

"""The takeover report as one self-contained HTML page. Pure.

No scripts, no external style sheets or fonts: the page is an artefact an auditor
keeps, so it must render the same in ten years, offline. Every value is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#1b1b1b}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}code{font-size:.9em;word-break:break-all}
.pass{color:#0a6b2d;font-weight:bold}.fail{color:#a30f0f;font-weight:bold}
.muted{color:#666}
"""


def _cell(value: Any) -> str:
    if value is None or value == "":
        return '<span class="muted">-</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return escape(str(value))


def _verdict(ok: Any) -> str:
    if ok is None:
        return _cell(None)
    return '<span class="pass">met</span>' if ok else '<span class="fail">missed</span>'


def _table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: dict[str, Any]) -> str:
    passed = bool(report.get("passed"))
    verdict = "PASSED" if passed else "FAILED"
    what = "Takeover drill" if report.get("drill") else "Takeover"
    title = f"{what} of {report.get('target')}: {verdict}"
    css = "pass" if passed else "fail"
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(what)} of <code>{escape(str(report.get('target')))}</code>: "
             f"<span class=\"{css}\">{verdict}</span></h1>",
             f"<p>{escape(str(report.get('summary', '')))}</p>"]
    duration = report.get("duration_ms")
    parts.append(_table(["Item", "Value"], [
        ["Saga", f"<code>{_cell(report.get('saga'))}</code>"],
        ["Coordinator", _cell(report.get("coordinator"))],
        ["Reason", _cell(report.get("reason"))],
        ["Started", _cell(report.get("started_at"))],
        ["Finished", _cell(report.get("finished_at"))],
        ["Duration", _cell(f"{duration / 1000:.2f} s"
                           if isinstance(duration, int | float) else None)],
        ["Plan hash (sha256)", f"<code>{_cell(report.get('plan_hash'))}</code>"],
        ["Quorum", _cell(report.get("quorum"))],
        ["Approved", _cell(bool(report.get("approved")))],
    ]))
    parts.append("<h2>Approvals</h2>")
    approvals = report.get("approvals") or []
    parts.append(_table(["Member", "Key id", "Message id", "Signature", "At"], [
        [_cell(a.get("member")), f"<code>{_cell(a.get('key_id'))}</code>",
         f"<code>{_cell(a.get('msg_id'))}</code>",
         "verified against the roster" if a.get("verified") else "not verified",
         _cell(a.get("at"))] for a in approvals])
        if approvals else "<p>No approvals were counted.</p>")
    refused = report.get("refused_approvals") or []
    if refused:
        parts.append("<h2>Refused approvals (reported as security violations)</h2>")
        parts.append(_table(["Member", "Key id", "Message id", "Reason"], [
            [_cell(r.get("member")), f"<code>{_cell(r.get('key_id'))}</code>",
             f"<code>{_cell(r.get('msg_id'))}</code>", _cell(r.get("reason"))]
            for r in refused]))
    parts.append("<h2>Workloads</h2>")
    workloads = report.get("workloads") or []
    parts.append(_table(
        ["Workload", "From → to", "Status", "RTO s (target)", "RTO", "RPO s (target)",
         "RPO", "Data", "sha256", "Attempts", "Detail"],
        [[_cell(w.get("workload")),
          _cell(f"{w.get('source')} → {w.get('successor') or '-'}/{w.get('site') or '-'}"),
          f"<span class=\"{'pass' if w.get('status') == 'ok' else 'fail'}\">"
          f"{_cell(w.get('status'))}</span>",
          f"{_cell(w.get('rto_s'))} ({_cell(w.get('rto_target_s'))})", _verdict(w.get("rto_met")),
          f"{_cell(w.get('rpo_s'))} ({_cell(w.get('rpo_target_s'))})", _verdict(w.get("rpo_met")),
          _cell(f"{w.get('bytes')} B from {w.get('origin')}" if w.get("origin") else None),
          f"<code>{_cell(w.get('digest'))}</code>",
          _cell(w.get("attempts")) + "".join(f"<br><span class=\"muted\">{escape(r)}</span>"
                                             for r in w.get("retries") or []),
          _cell(w.get("detail"))] for w in workloads])
        if workloads else "<p>The target hosts no workloads: nothing to take over.</p>")
    failures = report.get("failures") or []
    if failures:
        parts.append("<h2>Failures</h2><ul>" + "".join(f"<li>{escape(str(f))}</li>"
                                                       for f in failures) + "</ul>")
    parts.append("<h2>Timeline</h2>")
    parts.append(_table(["At", "Step", "Status", "Workload", "By", "Detail"], [
        [_cell(e.get("at")), _cell(e.get("step")), _cell(e.get("status")),
         _cell(e.get("workload")), _cell(e.get("actor")), _cell(e.get("detail"))]
        for e in report.get("timeline") or []]))
    parts.append(f"<p><b>Result: <span class=\"{css}\">{verdict}</span></b></p>")
    if report.get("drill"):
        parts.append("<p class=\"muted\">Drill mode: the source was untouched and the real "
                     "placements were not changed; each shadow copy was stopped after its "
                     "check.</p>")
    parts.append("</body></html>\n")
    return "".join(parts)

"""A self-contained, printable HTML timeline of one complaint (one file, no server, no
network): the states as bands over time, every clock as a bar from its start to its due
instant with warnings and breaches marked, and the full event table with actors, roles,
approvals and fields changed."""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from complaintflow.actor import Actor
from complaintflow.storage import db

if TYPE_CHECKING:
    from complaintflow.engine import Engine

__all__ = ["render_timeline"]

PALETTE = ["#4e79a7", "#59a14f", "#9c755f", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#bab0ac", "#e15759"]
WIDTH = 1000
LEFT = 190


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_timeline(engine: Engine, number: str, actor: Actor | None = None,
                    at: datetime | None = None) -> str:
    replayed = engine.replay(number, at, actor)
    with db.read(engine.database) as conn:
        rules = engine.compiled(conn, replayed.ruleset).rules
    approvals = {t.approval.by for t in rules.transitions if t.approval is not None}
    zone = engine.zone
    events = replayed.events
    start = replayed.received_at
    ends = [e.occurred_at for e in events] + [at or engine.now()]
    ends += [t.due_at for t in replayed.timers.values() if t.due_at is not None]
    end = max(ends)
    span = max((end - start).total_seconds(), 60.0)

    def x(moment: datetime) -> float:
        return LEFT + (WIDTH - LEFT - 20) * (moment - start).total_seconds() / span

    def local(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "—"

    states = list(rules.states)
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(states)}
    parts: list[str] = []
    y = 30
    # state band
    parts.append(f'<text x="8" y="{y + 14}" class="lane">状态 State</text>')
    segments: list[tuple[str, datetime, datetime]] = []
    current = events[0].to_state if events else replayed.state
    since = start
    for ev in events[1:]:
        if ev.to_state != current:
            segments.append((current, since, ev.occurred_at))
            current, since = ev.to_state, ev.occurred_at
    segments.append((current, since, at or max(e.occurred_at for e in events)))
    for state, a, b in segments:
        wid = max(x(b) - x(a), 2.0)
        parts.append(f'<rect x="{x(a):.1f}" y="{y}" width="{wid:.1f}" height="20" '
                     f'fill="{colour.get(state, "#999")}"><title>{_e(rules.label(state))} '
                     f'({_e(state)}) {local(a)} → {local(b)}</title></rect>')
        if wid > 50:
            parts.append(f'<text x="{x(a) + 3:.1f}" y="{y + 14}" class="in">'
                         f'{_e(rules.label(state))}</text>')
    y += 34
    # events
    parts.append(f'<text x="8" y="{y + 10}" class="lane">事件 Events</text>')
    for ev in events:
        kind = "breach" if ev.type == "timer_breached" else (
            "warn" if ev.type == "timer_warning" else (
                "approval" if ev.trigger in approvals else "ev"))
        parts.append(f'<circle cx="{x(ev.occurred_at):.1f}" cy="{y + 6}" r="4" class="{kind}">'
                     f'<title>#{ev.seq} {local(ev.occurred_at)} {_e(ev.trigger or ev.type)} by '
                     f'{_e(ev.actor_id)}</title></circle>')
    y += 26
    # clocks
    for t in replayed.timers.values():
        label = t.timer
        ctimer = next((d for d in rules.definition.timers if d.id == t.timer), None)
        if ctimer is not None:
            label = ctimer.label.zh
        parts.append(f'<text x="8" y="{y + 12}" class="lane">{_e(label)}</text>')
        if t.due_at is not None:
            parts.append(f'<rect x="{x(t.started_at):.1f}" y="{y + 2}" '
                         f'width="{max(x(t.due_at) - x(t.started_at), 1.0):.1f}" height="12" '
                         f'class="planned"><title>planned {local(t.started_at)} → due '
                         f'{local(t.due_at)}</title></rect>')
        actual_end = t.stopped_at or (at or engine.now())
        parts.append(f'<line x1="{x(t.started_at):.1f}" x2="{x(actual_end):.1f}" '
                     f'y1="{y + 8}" y2="{y + 8}" class="actual"/>')
        for w in t.warnings:
            fired = datetime.fromisoformat(w["fired_at"])
            wx = x(fired)
            parts.append(f'<path d="M{wx - 5:.1f},{y + 16} L{wx:.1f},{y} '
                         f'L{wx + 5:.1f},{y + 16} Z" class="warn"><title>warning '
                         f'{local(fired)}</title></path>')
        if t.breached_at is not None:
            bx = x(t.breached_at)
            parts.append(f'<text x="{bx - 6:.1f}" y="{y + 14}" class="breachmark">✕<title>breached '
                         f'{local(t.breached_at)}</title></text>')
        y += 22
    height = y + 20
    ticks = []
    step = timedelta(seconds=span / 6)
    for i in range(7):
        moment = start + step * i
        ticks.append(f'<line x1="{x(moment):.1f}" x2="{x(moment):.1f}" y1="20" y2="{height - 14}" '
                     f'class="grid"/><text x="{x(moment):.1f}" y="{height - 2}" class="tick">'
                     f'{local(moment)}</text>')
    svg = (f'<svg viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
           f'xmlns="http://www.w3.org/2000/svg">{"".join(ticks)}{"".join(parts)}</svg>')
    rows = []
    for ev in events:
        p = ev.payload
        changed = ", ".join(f"{_e(k)}={_e(v)}" for k, v in (p.get("set") or {}).items())
        timers = "; ".join(f"{_e(k)}: {', '.join(_e(i.get('timer')) for i in v)}"
                           for k, v in (p.get("timers") or {}).items())
        if ev.type in ("timer_warning", "timer_breached"):
            due = datetime.fromisoformat(p["due_at"].replace("Z", "+00:00"))
            timers = f"{_e(p.get('timer'))} due {_e(local(due))}"
        cls = "breach" if ev.type == "timer_breached" else (
            "approval" if ev.trigger in approvals else "")
        rows.append(
            f'<tr class="{cls}"><td>{ev.seq}</td><td>{local(ev.occurred_at)}</td>'
            f'<td>{_e(ev.actor_id)}<br><small>{_e(", ".join(ev.actor_roles))}</small></td>'
            f'<td>{_e(ev.trigger or ev.type)}{" ✔ approval" if ev.trigger in approvals else ""}'
            f'</td><td>{_e(rules.label(ev.from_state or "") if ev.from_state else "")} → '
            f'{_e(rules.label(ev.to_state))}</td><td>{changed}</td><td>{timers}</td>'
            f'<td><code>{_e(ev.ruleset[:10])}</code></td><td><code>{_e(ev.hash[:12])}</code>'
            f'</td></tr>')
    clock_rows = "".join(
        f'<tr class="{"breach" if t.breached_at else ""}"><td>{_e(t.timer)} #{t.run}</td>'
        f'<td>{_e(t.status)}</td><td>{local(t.started_at)}</td><td>{local(t.due_at)}'
        f'{" (provisional)" if t.provisional else ""}</td><td>{local(t.stopped_at)}</td>'
        f'<td>{len(t.warnings)}</td><td>{local(t.breached_at)}</td></tr>'
        for t in replayed.timers.values())
    title = f"{number} — {rules.label(replayed.state)} ({replayed.state})"
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif;
       margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} table {{ border-collapse: collapse; width: 100%; font-size: 12px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 5px; vertical-align: top; text-align: left; }}
tr.breach td {{ background: #fde2e1; }} tr.approval td {{ background: #e3f4e1; }}
.lane {{ font-size: 11px; fill: #333; }} .in {{ font-size: 10px; fill: #fff; }}
.tick {{ font-size: 9px; fill: #666; text-anchor: middle; }} .grid {{ stroke: #eee; }}
.planned {{ fill: #dde6f3; stroke: #7a9cc6; }} .actual {{ stroke: #333; stroke-width: 2; }}
circle.ev {{ fill: #555; }} circle.approval {{ fill: #2e8b57; }}
circle.warn, path.warn {{ fill: #f0a202; }} circle.breach {{ fill: #d62728; }}
.breachmark {{ fill: #d62728; font-size: 14px; font-weight: bold; }}
@media print {{ body {{ margin: 0; }} }}
</style></head><body>
<h1>{_e(title)}</h1>
<p>Severity: <b>{_e(replayed.severity)}</b> · version {replayed.version} · received
{local(replayed.received_at)} · times in {_e(str(zone))} · rule set
<code>{_e(replayed.ruleset[:12])}</code>
{f" · as of {local(at)}" if at else ""}</p>
{svg}
<h2>时限 Clocks</h2>
<table><tr><th>clock</th><th>status</th><th>started</th><th>due</th><th>stopped</th>
<th>warnings</th><th>breached</th></tr>{clock_rows}</table>
<h2>记录 History</h2>
<table><tr><th>#</th><th>time</th><th>actor (roles)</th><th>action</th><th>from → to</th>
<th>fields set</th><th>clocks</th><th>rules</th><th>hash</th></tr>{"".join(rows)}</table>
</body></html>
"""

"""Charts as inline SVG strings, for the self-contained HTML reports (report.py): no plotting library,
no JavaScript, no CDN -- the report opens offline and stays small.

Every chart takes plain lists of numbers; non-finite values are dropped (a NaN loss is a gap).
"""

import math
from html import escape

W, H = 560, 240  # the plot box, in SVG units (the page scales it)
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 26, 36
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


class Axes:
    """Data -> pixel mapping of one chart (log scale on y or x when asked and all values > 0)."""

    def __init__(self, xs, ys, log_x=False, log_y=False, pad_x=False):
        self.log_x = log_x and all(x > 0 for x in xs)
        self.log_y = log_y and all(y > 0 for y in ys)
        tx, ty = [self.tx(x) for x in xs] or [0, 1], [self.ty(y) for y in ys] or [0, 1]
        self.x0, self.x1 = min(tx), max(tx)
        self.y0, self.y1 = min(ty), max(ty)
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        if pad_x:  # scatter points off the frame's edges
            margin = (self.x1 - self.x0) * 0.05
            self.x0, self.x1 = self.x0 - margin, self.x1 + margin
        pad = (self.y1 - self.y0) * 0.05 or 1
        self.y0, self.y1 = self.y0 - pad, self.y1 + pad

    def tx(self, x):
        return math.log10(x) if self.log_x else x

    def ty(self, y):
        return math.log10(y) if self.log_y else y

    def px(self, x) -> float:
        return LEFT + (self.tx(x) - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y) -> float:
        return H - BOTTOM - (self.ty(y) - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def frame(self, title: str, x_label: str, y_label: str, categories: list | None = None) -> list[str]:
        """Title, axis labels, box, y grid; x ticks at round numbers, or at each category's index."""
        out = [f'<text x="{LEFT}" y="16" class="t">{escape(title)}</text>',
               f'<text x="{W - RIGHT}" y="{H - 4}" class="l" text-anchor="end">{escape(x_label)}</text>',
               f'<text x="4" y="{TOP - 4}" class="l">{escape(y_label)}</text>',
               f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="box"/>']
        for t in ticks(self.y0, self.y1):
            y = H - BOTTOM - (t - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)
            label = fmt(10 ** t) if self.log_y else fmt(t)
            out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
                       f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="l" text-anchor="end">{label}</text>')
        xs = ([(i, escape(str(c))) for i, c in enumerate(categories)] if categories else
              [(t, fmt(10 ** t) if self.log_x else fmt(t)) for t in ticks(self.x0, self.x1)])
        for t, label in xs:
            x = LEFT + (t - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)
            out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 14}" class="l" text-anchor="middle">{label}</text>')
        return out


def svg(parts: list[str]) -> str:
    return f'<svg viewBox="0 0 {W} {H}" class="chart" role="img">' + "".join(parts) + "</svg>"


def legend(names: list[tuple[str, str, bool]]) -> list[str]:
    """(name, colour, dashed) per series: a swatch of its line, then its name, right-aligned in the plot box."""
    out = []
    for i, (name, color, dashed) in enumerate(names):
        y = TOP + 14 + 13 * i
        x = W - RIGHT - 8 - 5.5 * len(name)  # where the right-aligned text begins (about 5.5 units a character)
        dash = ' stroke-dasharray="4 2"' if dashed else ""
        out.append(f'<line x1="{x - 22:.1f}" x2="{x - 4:.1f}" y1="{y - 3.5}" y2="{y - 3.5}" stroke="{color}" '
                   f'stroke-width="2.5"{dash}/><text x="{W - RIGHT - 8}" y="{y}" class="l" text-anchor="end">'
                   f'{escape(name)}</text>')
    return out


def line_chart(series: list[dict], title: str, x_label: str = "step", y_label: str = "", *, log_y: bool = False,
               hlines: list[tuple[float, str]] = (), marks: list[dict] = ()) -> str:
    """series: {"name", "points": [[x, y], ...], "dashed"?}; hlines: (y, label) thresholds;
    marks: {"x", "label", "color"} vertical event markers."""
    series = [{**s, "points": [(x, y) for x, y in s["points"] if finite(x) and finite(y)]} for s in series]
    xs = [x for s in series for x, _ in s["points"]] + [m["x"] for m in marks if finite(m["x"])]
    ys = [y for s in series for _, y in s["points"]] + [y for y, _ in hlines if finite(y)]
    if not xs:
        return f'<p class="empty">{escape(title)}: nothing logged</p>'
    ax = Axes(xs, ys, log_y=log_y)
    out = ax.frame(title, x_label, y_label)
    for y, label in hlines:
        if finite(y):
            out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{ax.py(y):.1f}" y2="{ax.py(y):.1f}" class="th"/>'
                       f'<text x="{LEFT + 4}" y="{ax.py(y) - 3:.1f}" class="l" fill="#c00">{escape(label)}</text>')
    for m in marks:
        x = ax.px(m["x"])
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{H - BOTTOM}" stroke="{m["color"]}" '
                   f'stroke-dasharray="3 2"><title>{escape(m["label"])}</title></line>'
                   f'<text x="{x + 2:.1f}" y="{TOP + 10}" class="l" fill="{m["color"]}">{escape(m["label"])}</text>')
    names = []
    for i, s in enumerate(series):
        color = s.get("color") or PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{ax.px(x):.1f},{ax.py(y):.1f}" for x, y in s["points"])
        dash = ' stroke-dasharray="5 3"' if s.get("dashed") else ""
        if len(s["points"]) > 1:
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.6"{dash}>'
                       f'<title>{escape(s["name"])}</title></polyline>')
        if s.get("end_mark") or len(s["points"]) == 1:  # a curve cut short: a dot where it stopped
            x, y = s["points"][-1]
            out.append(f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="3" fill="{color}">'
                       f'<title>{escape(s["name"])}: stopped at {fmt(x)}</title></circle>')
        names.append((s["name"], color, bool(s.get("dashed"))))
    if 1 < len(names) <= 12:
        out += legend(names)
    return svg(out)


def scatter(points: list[tuple], title: str, x_label: str, y_label: str, *, categories: list | None = None,
            log_x: bool = False, highlight=None) -> str:
    """points: (x, y, label). With categories, x is the category's name, placed at its index."""
    pts = [((categories.index(x) if categories else x), y, label) for x, y, label in points
           if (x in categories if categories else finite(x)) and finite(y)]
    if not pts:
        return f'<p class="empty">{escape(title)}: no finished trials</p>'
    ax = Axes([p[0] for p in pts] + ([-0.5, len(categories) - 0.5] if categories else []), [p[1] for p in pts],
              log_x=log_x, pad_x=not categories)
    out = ax.frame(title, "" if categories else x_label, y_label, categories)
    for x, y, label in pts:
        best = label == highlight
        out.append(f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="{5 if best else 3.5}" '
                   f'fill="{"#d62728" if best else "#1f77b4"}" fill-opacity="0.8"><title>{escape(str(label))}: '
                   f'{fmt(y)}</title></circle>')
    return svg(out)


def pareto(points: list[tuple], front: list[str], x_label: str, y_label: str, directions: list[str]) -> str:
    """Two objectives of a multi-objective sweep: every completed trial (x, y, label), the Pareto front's trials
    in red joined by a line (sorted along the first objective)."""
    pts = [(x, y, label) for x, y, label in points if finite(x) and finite(y)]
    title = f"{y_label} ({directions[1]}) vs {x_label} ({directions[0]}), Pareto front in red"
    if not pts:
        return f'<p class="empty">{escape(title)}: no completed trials</p>'
    ax = Axes([p[0] for p in pts], [p[1] for p in pts], pad_x=True)
    out = ax.frame(title, x_label, y_label)
    on_front = sorted((p for p in pts if p[2] in front), key=lambda p: p[0])
    if len(on_front) > 1:
        line = " ".join(f"{ax.px(x):.1f},{ax.py(y):.1f}" for x, y, _ in on_front)
        out.append(f'<polyline points="{line}" fill="none" stroke="#d62728" stroke-width="1.4"/>')
    for x, y, label in pts:
        red = label in front
        out.append(f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="{4.5 if red else 3.5}" '
                   f'fill="{"#d62728" if red else "#1f77b4"}" fill-opacity="0.85"><title>{escape(str(label))}: '
                   f'{fmt(x)}, {fmt(y)}</title></circle>')
    return svg(out)


def parallel(rows: list[dict], axes: list[str], color_key: str, title: str, lower_is_better: bool = True) -> str:
    """Parallel coordinates: one polyline per row over `axes` (numbers, or categories placed evenly);
    colored by `color_key` from best (dark) to worst (light)."""
    rows = [r for r in rows if all(r.get(a) is not None for a in axes) and finite(r.get(color_key))]
    if not rows or not axes:
        return f'<p class="empty">{escape(title)}: no finished trials</p>'
    scales = {}
    for a in axes:
        values = [r[a] for r in rows]
        if all(finite(v) for v in values):
            lo, hi = min(values), max(values)
            log = lo > 0 and hi / lo > 20

            def position(v, lo=lo, hi=hi, log=log):  # 0 (lowest) .. 1 (highest) on the axis
                if hi == lo:
                    return 0.5
                return math.log(v / lo) / math.log(hi / lo) if log else (v - lo) / (hi - lo)

            scales[a] = (position, fmt(lo), fmt(hi))
        else:
            cats = sorted({str(v) for v in values})
            scales[a] = (lambda v, cats=cats: (cats.index(str(v)) + 0.5) / len(cats), cats[0], cats[-1])
    right = 60  # room for the last axis' labels
    xs = [LEFT + i * (W - LEFT - right) / max(1, len(axes) - 1) for i in range(len(axes))]
    top, bottom = TOP + 8, H - BOTTOM
    out = [f'<text x="{LEFT}" y="16" class="t">{escape(title)}</text>']
    for i, (x, a) in enumerate(zip(xs, axes)):
        _, lo, hi = scales[a]
        # Axis names by their last part (the full key on hover), on two staggered rows so neighbours never meet.
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" class="ax"/>'
                   f'<text x="{x:.1f}" y="{H - 22 + 12 * (i % 2)}" class="l" text-anchor="middle">'
                   f'<title>{escape(a)}</title>{escape(a.rsplit(".", 1)[-1])}</text>'
                   f'<text x="{x + 3:.1f}" y="{bottom - 2}" class="l">{escape(lo)}</text>'
                   f'<text x="{x + 3:.1f}" y="{top + 8}" class="l">{escape(hi)}</text>')
    ranked = sorted(rows, key=lambda r: r[color_key], reverse=not lower_is_better)
    for rank, r in reversed(list(enumerate(ranked))):  # the best drawn last, on top
        shade = rank / max(1, len(ranked) - 1)
        color = f"rgb({int(30 + 190 * shade)},{int(80 + 140 * shade)},{int(180 + 60 * shade)})"
        pts = " ".join(f"{x:.1f},{bottom - scales[a][0](r[a]) * (bottom - top):.1f}" for x, a in zip(xs, axes))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{2.2 if rank == 0 else 1.3}">'
                   f'<title>trial {escape(str(r.get("trial")))}: {fmt(r[color_key])}</title></polyline>')
    return svg(out)


def bars(items: list[tuple[str, float]], title: str) -> str:
    if not items:
        return f'<p class="empty">{escape(title)}: not enough finished trials</p>'
    height = TOP + 22 * len(items) + 10
    top = max(v for _, v in items) or 1
    out = [f'<text x="{LEFT}" y="16" class="t">{escape(title)}</text>']
    for i, (name, v) in enumerate(items):
        y = TOP + 22 * i
        width = (W - 200) * v / top
        out.append(f'<text x="150" y="{y + 14}" class="l" text-anchor="end">{escape(name)}</text>'
                   f'<rect x="156" y="{y + 3}" width="{width:.1f}" height="14" fill="#1f77b4"/>'
                   f'<text x="{160 + width:.1f}" y="{y + 14}" class="l">{v:.2f}</text>')
    return f'<svg viewBox="0 0 {W} {height}" class="chart" role="img">' + "".join(out) + "</svg>"

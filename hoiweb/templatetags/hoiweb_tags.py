from __future__ import annotations

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def fmt(value, digits: int = 4):
    """Numbers with ``digits`` significant figures; '—' when missing."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        return f"{value:.{int(digits)}g}"
    return str(value)


@register.filter
def get(mapping, key):
    if isinstance(mapping, dict):
        return mapping.get(key, mapping.get(str(key)))
    return None


@register.filter
def seconds(value):
    if value is None or value == "":
        return "—"
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@register.filter
def diff_html(text: str):
    lines = []
    for line in (text or "").splitlines():
        cls = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else "del"
            if line.startswith("-") and not line.startswith("---")
            else "hunk"
            if line.startswith("@@")
            else ""
        )
        lines.append(f'<span class="{cls}">{escape(line)}</span>' if cls else escape(line))
    return mark_safe("\n".join(lines))


@register.simple_tag(takes_context=True)
def sort_link(context, key: str, label: str):
    current = context["sort"]
    new = f"-{key}" if current == key else key
    qs = context["filter"].querystring(sort=new, page=None)
    arrow = " ▲" if current == key else " ▼" if current == f"-{key}" else ""
    cls = "sorted" if arrow else ""
    return mark_safe(f'<a class="{cls}" href="?{escape(qs)}">{escape(label)}{arrow}</a>')

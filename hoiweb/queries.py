"""The runs filter shared by the list, triage, bulk review, keyboard navigation and the API.

Filters live in the query string (shareable URLs): dataset, category (id), status, failed_check,
review_state, config, video (substring), sort (field or ``metric:<name>``, ``-`` for descending).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db import connection
from django.db.models import F, FloatField, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from hoiweb.models import Run

FILTER_KEYS = ("dataset", "category", "status", "failed_check", "review_state", "config", "video")
SORT_FIELDS = {
    "created": "created_at",
    "id": "id",
    "video": "video__video_id",
    "status": "status",
    "failed_check": "failed_check",
    "review": "review_state",
    "config": "config_name",
}
DEFAULT_SORT = "-created"


@dataclass
class RunFilter:
    params: dict[str, str] = field(default_factory=dict)
    sort: str = DEFAULT_SORT
    columns: list[str] = field(default_factory=list)  # metric columns shown in the list (kept in links)

    @classmethod
    def from_querydict(cls, query) -> RunFilter:
        params = {k: query.get(k, "").strip() for k in FILTER_KEYS if query.get(k, "").strip()}
        sort = query.get("sort", DEFAULT_SORT).strip() or DEFAULT_SORT
        columns = [c for c in query.getlist("col") if c] if hasattr(query, "getlist") else []
        return cls(params=params, sort=sort, columns=columns)

    def apply(self, qs: QuerySet | None = None) -> QuerySet:
        qs = Run.objects.all() if qs is None else qs
        p = self.params
        if p.get("dataset"):
            qs = qs.filter(category__dataset__name=p["dataset"])
        if p.get("category", "").isdigit():
            qs = qs.filter(category_id=int(p["category"]))
        if p.get("status"):
            qs = qs.filter(status=p["status"])
        if "failed_check" in p:
            qs = qs.filter(failed_check="" if p["failed_check"] == "none" else p["failed_check"])
        if p.get("review_state"):
            qs = qs.filter(review_state=p["review_state"])
        if p.get("config"):
            qs = qs.filter(config_name=p["config"])
        if p.get("video"):
            qs = qs.filter(video__video_id__icontains=p["video"])
        return self.order(qs)

    def order(self, qs: QuerySet) -> QuerySet:
        descending = self.sort.startswith("-")
        key = self.sort.lstrip("-")
        if key.startswith(("metric:", "gt:")):
            kind, name = key.split(":", 1)
            column = "metrics" if kind == "metric" else "gt_metrics"
            qs = qs.annotate(sort_value=Cast(KeyTextTransform(name, column), FloatField()))
            expr = F("sort_value").desc(nulls_last=True) if descending else F("sort_value").asc(nulls_last=True)
            return qs.order_by(expr, "-id")
        field_name = SORT_FIELDS.get(key, "created_at")
        return qs.order_by(f"-{field_name}" if descending else field_name, "-id")

    def querystring(self, **changes) -> str:
        merged = {**self.params, "sort": self.sort}
        for k, v in changes.items():
            if v in (None, ""):
                merged.pop(k, None)
            else:
                merged[k] = v
        if merged.get("sort") == DEFAULT_SORT:
            merged.pop("sort")
        if self.columns:
            merged["col"] = self.columns
        return urlencode(merged, doseq=True)

    def neighbours(self, run_id: int) -> tuple[int | None, int | None]:
        """Previous and next run ids within this filter and order (for the j/k shortcuts)."""
        ids = list(self.apply().values_list("id", flat=True))
        try:
            i = ids.index(run_id)
        except ValueError:
            return None, None
        return (ids[i - 1] if i > 0 else None), (ids[i + 1] if i + 1 < len(ids) else None)


_key_cache: dict[str, tuple[float, list[str]]] = {}


def _json_keys(column: str, max_age: float) -> list[str]:
    now = time.monotonic()
    cached = _key_cache.get(column)
    if cached and now - cached[0] < max_age and cached[1]:
        return cached[1]
    table = Run._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT jsonb_object_keys({column}) FROM {table} ORDER BY 1")  # noqa: S608 - fixed names
        names = [row[0] for row in cursor.fetchall()]
    _key_cache[column] = (now, names)
    return names


def metric_names(max_age: float = 30.0) -> list[str]:
    """Every metric key used by any run (cached briefly: it feeds the sort menu)."""
    return _json_keys("metrics", max_age)


def gt_metric_names(max_age: float = 30.0) -> list[str]:
    """Every ground-truth metric key (synthetic videos)."""
    return _json_keys("gt_metrics", max_age)


_choice_cache: dict[str, tuple[float, list[str]]] = {}


def distinct_values(field_name: str, max_age: float = 30.0) -> list[str]:
    """Distinct values of a Run column for the filter menus (cached briefly: they change rarely)."""
    now = time.monotonic()
    cached = _choice_cache.get(field_name)
    if cached and now - cached[0] < max_age:
        return cached[1]
    values = list(Run.objects.order_by(field_name).values_list(field_name, flat=True).distinct())
    _choice_cache[field_name] = (now, values)
    return values

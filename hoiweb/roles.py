"""Roles are Django groups: ``reviewer`` (accept/reject runs) and ``admin`` (also launch, cancel, retry, configs).

Created by migration 0002; ``ensure_roles`` re-creates them (e.g. after a test flushed the tables).
"""

from __future__ import annotations

ROLES: dict[str, list[str]] = {
    "reviewer": ["review_runs"],
    "admin": ["review_runs", "launch_runs", "add_config", "change_config"],
}


def ensure_roles() -> None:
    from django.contrib.auth.models import Group, Permission

    for role, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="hoiweb", codename__in=codenames))

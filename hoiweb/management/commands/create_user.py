"""Create (or update) a user with a role, optionally issuing an API token."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from hoiweb.models import ApiToken
from hoiweb.roles import ensure_roles


class Command(BaseCommand):
    help = "Create or update USERNAME with --password and --role (viewer|reviewer|admin); --token prints an API token."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--role", choices=["viewer", "reviewer", "admin"], default="reviewer")
        parser.add_argument("--superuser", action="store_true", help="also give Django admin access")
        parser.add_argument("--token", action="store_true", help="issue an API token and print it (shown once)")

    def handle(self, *args, username, password, role, superuser=False, token=False, **options):
        if len(password) < 4:
            raise CommandError("password too short")
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = user.is_superuser = superuser or role == "admin"
        user.save()
        user.groups.clear()
        ensure_roles()
        if role != "viewer":
            user.groups.add(Group.objects.get(name=role))
        self.stdout.write(f"{'created' if created else 'updated'} {username} ({role})")
        if token:
            _, key = ApiToken.issue(user, name="cli")
            self.stdout.write(f"API token: {key}")

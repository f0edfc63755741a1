"""Make Redis agree with PostgreSQL (the source of truth) after a Redis flush or restart."""

from django.core.management.base import BaseCommand

from hoiweb.launch import reconcile


class Command(BaseCommand):
    help = "Fail jobs of dead workers and re-enqueue queued/running runs whose RQ jobs are missing."

    def handle(self, *args, **options):
        counts = reconcile()
        self.stdout.write(", ".join(f"{k}={v}" for k, v in counts.items()))

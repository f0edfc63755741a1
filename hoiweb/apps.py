from django.apps import AppConfig


class HoiwebConfig(AppConfig):
    name = "hoiweb"
    default_auto_field = "django.db.models.BigAutoField"

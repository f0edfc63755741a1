"""hoiweb settings: everything deployment-specific comes from the environment (see .env.example)."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = os.environ.get(name, default)
    if required and not value:
        raise ImproperlyConfigured(f"setting {name} is required (set the environment variable {name})")
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env("SECRET_KEY", "insecure-dev-key-only-for-debug" if DEBUG else None, required=True)
ALLOWED_HOSTS = [h.strip() for h in (env("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]") or "").split(",") if h.strip()]

DATABASE_URL = env("DATABASE_URL", required=True)
REDIS_URL = env("REDIS_URL", required=True)
RESULTS_DIR = Path(env("RESULTS_DIR", str(BASE_DIR / "var" / "results")))
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))
MEDIA_URL = "/media/"
MAX_UPLOAD_MB = int(env("MAX_UPLOAD_MB", "512"))
# Exports (zips) and upload staging live under MEDIA_ROOT; inputs and results live under RESULTS_DIR.
EXPORT_DIR = MEDIA_ROOT / "exports"
UPLOAD_STAGING_DIR = MEDIA_ROOT / "staging"
# Worker liveness: a running stage job refreshes its heartbeat every HEARTBEAT_SECONDS; one whose heartbeat
# is older than WORKER_DEAD_AFTER_SECONDS is marked failed (its worker died) by any live worker or page view.
HEARTBEAT_SECONDS = float(env("HOIWEB_HEARTBEAT_SECONDS", "5"))
WORKER_DEAD_AFTER_SECONDS = float(env("HOIWEB_WORKER_DEAD_AFTER_SECONDS", "60"))
# Progress writes from a running stage are throttled to at most this many per second.
PROGRESS_WRITES_PER_SECOND = float(env("HOIWEB_PROGRESS_WRITES_PER_SECOND", "2"))
# Engine config used as the base of the launch form's editor and of the diff on the run page.
DEFAULT_CONFIG_PATH = Path(
    env("HOIWEB_DEFAULT_CONFIG", str(BASE_DIR / "reconstruction" / "configs" / "manip_anny.yaml"))
)
RUNS_PER_PAGE = int(env("HOIWEB_RUNS_PER_PAGE", "50"))

# Checkpoint / model paths of optional backends (empty = backend unavailable; selecting it is an error).
SAM2_CHECKPOINT = env("SAM2_CHECKPOINT", "")
MOGE_CHECKPOINT = env("MOGE_CHECKPOINT", "")
SMPLX_MODEL_DIR = env("SMPLX_MODEL_DIR", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "hoiweb",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",  # login required everywhere by default
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hoiweb.urls"
WSGI_APPLICATION = "hoiweb.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database_from_url(url: str) -> dict:
    import dj_database_url

    config = dj_database_url.parse(url, conn_max_age=60)
    if config.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':')[0]}://")
    return config


DATABASES = {"default": _database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

RQ_QUEUES = {
    "gpu": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 7200},
    "cpu": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
}

AUTH_PASSWORD_VALIDATORS = [{"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"}]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"


def _plotly_bundle_dir() -> Path | None:
    """plotly.min.js ships inside the installed ``plotly`` package: served from there, never from a CDN."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "package_data"
    return folder if (folder / "plotly.min.js").exists() else None


STATICFILES_DIRS: list = [BASE_DIR / "static"]
if _plotly_bundle_dir() is not None:
    STATICFILES_DIRS.append(("vendor/plotly", str(_plotly_bundle_dir())))
# Serve static files straight from the finders (no collectstatic step needed for an internal deployment).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
STATIC_ROOT = BASE_DIR / "staticfiles"
X_FRAME_OPTIONS = "SAMEORIGIN"  # the run page embeds our own ScenePic HTML in an iframe

DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}

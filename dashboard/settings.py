"""Django settings for the scan status dashboard.

Everything that differs between machines comes from the environment (see .env.example and the README);
a malformed value stops start-up with ImproperlyConfigured naming the variable.
"""

import logging
import socket
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
    env_timezone,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Reading settings never writes: `make run` (demo/run.py) creates var/, its broker folders and a local secret key.
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var"))).resolve()
SECRET_KEY_FILE = VAR_DIR / "secret-key"


def _secret_key() -> str:
    """SECRET_KEY from the environment, else the local key `make run` keeps under var/; else stop."""
    key = env_str("SECRET_KEY") or (SECRET_KEY_FILE.read_text().strip() if SECRET_KEY_FILE.is_file() else "")
    if not key:
        raise ImproperlyConfigured("SECRET_KEY must be set (32 or more random characters)")
    if len(key) < 32:
        raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")
    return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "scans",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise (which serves its own pre-compressed files), before everything that writes the body: the
    # live table compresses about 15:1. Django 4.2+ masks the length of gzip responses against BREACH.
    "django.middleware.gzip.GZipMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Times on the viewer's clock (the `tz` cookie); the database stays in UTC.
    "dashboard.middleware.ViewerTimeZoneMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

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
                "scans.context_processors.dashboard",
            ],
        },
    },
]


def _database() -> dict:
    url = env_str("DATABASE_URL").strip() or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
    try:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL this project understands: {exc}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the web server read while the worker writes; the timeout rides out short write locks.
        config["CONN_MAX_AGE"] = 0
        # Tests use a file, not memory, so threads and worker processes in them share one database.
        config["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
        config["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "scans:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Sessions are read from the cache first, so a polling page does not cost a session query every time.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

# --- Protecto ---------------------------------------------------------------------------------------------
# Demo mode is explicit (`make run` turns it on when PROTECTO_API_URL is unset): the API is the simulator of
# demo/ on SIMULATOR_PORT, its token is not a secret, and alert mail goes to the console. Without demo mode a
# missing PROTECTO_API_URL stops start-up instead of quietly polling nothing.
DEMO_MODE = env_bool("DEMO_MODE", False)
SIMULATOR_PORT = env_int("SIMULATOR_PORT", 8765, minimum=1, maximum=65535)
PROTECTO_API_URL = env_url("PROTECTO_API_URL", f"http://127.0.0.1:{SIMULATOR_PORT}" if DEMO_MODE else "")
if not PROTECTO_API_URL:
    raise ImproperlyConfigured("PROTECTO_API_URL must be set (or DEMO_MODE=true for the bundled simulator)")
PROTECTO_AUTH_TOKEN = env_str("PROTECTO_AUTH_TOKEN", "simulator-token" if DEMO_MODE else "")
if not PROTECTO_AUTH_TOKEN:
    raise ImproperlyConfigured("PROTECTO_AUTH_TOKEN must be set when PROTECTO_API_URL is set")
PROTECTO_STATUS_PATH = env_path("PROTECTO_STATUS_PATH", "/data-scan-status")
PROTECTO_BATCH_SIZE = env_int("PROTECTO_BATCH_SIZE", 100, minimum=1, maximum=1000)
PROTECTO_TIMEOUT_SECONDS = env_float("PROTECTO_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# The whole of one request (connect, send, every byte of the answer) must fit in this, however slowly it drips.
PROTECTO_DEADLINE_SECONDS = env_float("PROTECTO_DEADLINE_SECONDS", 30.0, minimum=0.5, maximum=600)
# An answer larger than this is refused while it streams in, never read whole into memory.
PROTECTO_MAX_ANSWER_BYTES = env_int("PROTECTO_MAX_ANSWER_BYTES", 20_000_000, minimum=1024)
PROTECTO_MAX_RETRIES = env_int("PROTECTO_MAX_RETRIES", 3, minimum=0, maximum=10)
PROTECTO_BACKOFF_SECONDS = env_float("PROTECTO_BACKOFF_SECONDS", 0.5)
PROTECTO_TIMEZONE = env_timezone("PROTECTO_TIMEZONE", "UTC")
REFRESH_INTERVAL_SECONDS = env_int("REFRESH_INTERVAL_SECONDS", 30, minimum=1, maximum=86400)
# Adaptive polling: a scan unchanged for a while is checked less often, doubling every 5 min up to this.
# Equal to REFRESH_INTERVAL_SECONDS checks every active scan every interval (see bench/adaptive_polling.py).
REFRESH_MAX_INTERVAL_SECONDS = env_int("REFRESH_MAX_INTERVAL_SECONDS", 120, minimum=1, maximum=86400)
# Batches claimed and not yet written back, at most (one Celery task each, shared by every worker): bounds the
# concurrent requests to Protecto. Halved for a tick after a cycle with failed batches (429s, 5xx).
REFRESH_MAX_BATCHES_IN_FLIGHT = env_int("REFRESH_MAX_BATCHES_IN_FLIGHT", 8, minimum=1, maximum=1000)
# A cycle whose answers cover fewer of the IDs it asked for than this is "degraded", not "ok".
REFRESH_MIN_COVERAGE_PERCENT = env_int("REFRESH_MIN_COVERAGE_PERCENT", 90, minimum=1, maximum=100)
# An ID the API has not reported for this long becomes NOT FOUND: polled with backoff, alerted once.
NOT_FOUND_AFTER_HOURS = env_float("NOT_FOUND_AFTER_HOURS", 24.0, minimum=0.01)
# The poller is stale when nothing succeeded for this many intervals while there are scans to poll.
STALE_AFTER_INTERVALS = env_int("STALE_AFTER_INTERVALS", 3, minimum=2, maximum=100)
# A dead-man's switch (Healthchecks-style): pinged after each successful cycle; an outside monitor notices silence.
HEARTBEAT_URL = env_url("HEARTBEAT_URL")
# How often the independent watchdog (manage.py watchdog) checks the poller's staleness.
WATCHDOG_INTERVAL_SECONDS = env_int("WATCHDOG_INTERVAL_SECONDS", 60, minimum=5, maximum=3600)
# How often an open page asks whether anything changed (it costs one indexed query when nothing did).
DASHBOARD_POLL_SECONDS = env_int("DASHBOARD_POLL_SECONDS", 5, minimum=1, maximum=3600)
# A scan waiting or running longer than this, by the API's own timestamps, counts as stuck.
STUCK_PENDING_MINUTES = env_int("STUCK_PENDING_MINUTES", 30, minimum=1)
STUCK_RUNNING_MINUTES = env_int("STUCK_RUNNING_MINUTES", 120, minimum=1)
# Retention (scans/retention.py, run hourly by beat). Finished scans are archived this many days after they
# ended (0 = never). History (status changes, refresh runs, alerts no longer waiting to be sent) older than
# HISTORY_RETENTION_DAYS is deleted, in batches small enough never to hold long locks.
ARCHIVE_FINISHED_AFTER_DAYS = env_int("ARCHIVE_FINISHED_AFTER_DAYS", 0, minimum=0, maximum=36500)
# Off (0) by default: archived scans are kept. Set, a scan archived this many days ago is deleted with its history.
DELETE_ARCHIVED_AFTER_DAYS = env_int("DELETE_ARCHIVED_AFTER_DAYS", 0, minimum=0, maximum=36500)
HISTORY_RETENTION_DAYS = env_int("HISTORY_RETENTION_DAYS", 180, minimum=1, maximum=36500)
RETENTION_BATCH_SIZE = env_int("RETENTION_BATCH_SIZE", 2000, minimum=1, maximum=50000)
RETENTION_MAX_BATCHES = env_int("RETENTION_MAX_BATCHES", 50, minimum=1, maximum=100000)

# --- Alerts and mail ----------------------------------------------------------------------------------------
ALERT_EMAILS = env_list("ALERT_EMAILS")
if DEMO_MODE and not ALERT_EMAILS:
    # The demo prints its alert mails (console backend); they need an addressee to be sent at all.
    ALERT_EMAILS = ["ops@example.com"]
ALERT_API_DOWN_AFTER = env_int("ALERT_API_DOWN_AFTER", 3, minimum=1, maximum=100)
ALERT_DIGEST_THRESHOLD = env_int("ALERT_DIGEST_THRESHOLD", 10, minimum=1)
# The port `make run` (python -m demo.run) serves the web app on; links in mail follow it unless SITE_URL is set.
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
SITE_URL = env_url("SITE_URL", f"http://127.0.0.1:{PORT}")
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT_SECONDS", 20, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "scan-alerts@localhost")
# No mail server configured (the demo): each alert is logged as one line (recipients, subject) instead of mailed.
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "dashboard.mail.OneLineConsoleBackend"
)

# --- Celery -----------------------------------------------------------------------------------------------
# No REDIS_URL: kombu's filesystem transport under var/, enough for one worker with beat on one machine.
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss"))
CELERY_QUEUE_DIR = VAR_DIR / "celery-queue"
# A broker that stops answering (a silent TCP cut) must fail a read, not hang it: timeouts, keepalive, pings.
BROKER_SOCKET_TIMEOUT_SECONDS = env_float("BROKER_SOCKET_TIMEOUT_SECONDS", 10.0, minimum=0.5, maximum=300)
BROKER_HEALTH_CHECK_SECONDS = env_int("BROKER_HEALTH_CHECK_SECONDS", 10, minimum=1, maximum=300)
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        "visibility_timeout": 3600,
        # Without a socket timeout a publish (beat, a page) on a silently dropped connection waits forever.
        "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        # Keepalive lets the kernel notice a NAT/firewall drop on an idle connection (beat's between ticks).
        "socket_keepalive": True,
        # (Linux names; a platform without them, e.g. macOS for development, keeps the kernel's defaults.)
        "socket_keepalive_options": {
            getattr(socket, name): value
            for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
            if hasattr(socket, name)
        },
        # redis-py pings a connection idle this long before using it; kombu (5.7+) also drops the worker's
        # BRPOP connection when its reply is this overdue, the only guard for the event loop's blocking read.
        "health_check_interval": BROKER_HEALTH_CHECK_SECONDS,
        # A timed-out command may have been applied: Celery's publish retry decides, not a blind replay.
        "retry_on_timeout": False,
    }
    # Celery's own limit on (re)establishing the broker connection; heartbeats are AMQP-only, so none here.
    CELERY_BROKER_CONNECTION_TIMEOUT = BROKER_SOCKET_TIMEOUT_SECONDS
else:
    CELERY_BROKER_URL = "filesystem://"
    # Every folder the transport writes is under var/ (without control_folder kombu writes ./control).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_QUEUE_DIR),
        "data_folder_out": str(CELERY_QUEUE_DIR),
        "control_folder": str(CELERY_QUEUE_DIR / "control"),
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}")

# --- Logging ----------------------------------------------------------------------------------------------
# At INFO, Celery writes 4-6 lines per beat tick (task sent, received, succeeded) and kombu warns "No hostname
# was supplied" on every connection to the filesystem broker (which has no host): a log that scrolls by when
# nothing happens. Those Celery loggers speak from WARNING unless LOG_LEVEL=DEBUG asks for everything (task
# failures are errors and still show); kombu's other warnings (e.g. rediss:// without certificate checks) stay.
_CHATTY_LEVEL = "DEBUG" if LOG_LEVEL == "DEBUG" else max(LOG_LEVEL, "WARNING", key=logging.getLevelName)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_token": {"()": "scans.logging.RedactTokenFilter"},
        "no_hostname_warning": {
            "()": "dashboard.logfilters.DropMessages",
            "prefixes": ["No hostname was supplied"],
        },
    },
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_token"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "urllib3": {"level": "WARNING"},
        "celery.beat": {"level": _CHATTY_LEVEL},
        "celery.worker.strategy": {"level": _CHATTY_LEVEL},
        "celery.app.trace": {"level": _CHATTY_LEVEL},
        "kombu.connection": {"filters": ["no_hostname_warning"]},
    },
}

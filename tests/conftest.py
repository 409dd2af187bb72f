"""Shared fixtures: users by role, services (Redis) that skip locally and fail in CI when absent."""

import os

import pytest

from tests.factories import make_user_in_group
from tests.ports import free_port

pytest_plugins = ["tests.simulator_fixtures"]


def require_service(reason: str) -> None:
    """Skip a test whose service is missing; in CI (CI=true) a missing service is a failure instead."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


@pytest.fixture
def redis_url() -> str:
    """A reachable Redis: REDIS_URL, else this machine's default one."""
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        require_service(f"no Redis at {url}: {exc}")
    return url


@pytest.fixture
def protecto_settings(settings, simulator):
    """Point the app's Protecto settings at the test simulator."""
    settings.PROTECTO_API_URL = simulator.url
    settings.PROTECTO_AUTH_TOKEN = simulator.config.token
    settings.PROTECTO_BATCH_SIZE = 10
    settings.PROTECTO_TIMEOUT_SECONDS = 2.0
    settings.PROTECTO_MAX_RETRIES = 1
    settings.PROTECTO_BACKOFF_SECONDS = 0.01
    settings.REFRESH_INTERVAL_SECONDS = 30
    return settings


@pytest.fixture
def eager_celery(settings):
    """Queued tasks run in-process, so a test sees the refresh a worker would have done."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.CELERY_TASK_EAGER_PROPAGATES = True
    return settings


@pytest.fixture
def operator(db):
    return make_user_in_group("olivia", "Operators")


@pytest.fixture
def viewer(db):
    return make_user_in_group("victor", "Viewers")


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture(autouse=True)
def _static_files_without_collectstatic(settings):
    """Pages render in tests without a collectstatic run (production uses the hashed manifest)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """The role fixtures hash a password per test; the production hasher's 1M rounds cost ~0.4 s each time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class _Inbox:
    """Messages a real SMTP server received, and a switch to refuse mail (the server 'down')."""

    def __init__(self) -> None:
        self.messages: list = []
        self.refuse = False
        self.controller = None

    def stop(self) -> None:
        """Take the server down: connections are refused until start()."""
        self.controller.stop()

    def start(self) -> None:
        """Bring the server back on the same port."""
        import asyncio

        # A stopped controller has closed its event loop, so it cannot listen again without a new one.
        self.controller.loop = asyncio.new_event_loop()
        self.controller.start()

    @property
    def running(self) -> bool:
        return self.controller is not None and self.controller.server is not None

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes, policy

        if self.refuse:
            return "421 Service not available, closing transmission channel"
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.messages[-1].envelope_to = list(envelope.rcpt_tos)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server (aiosmtpd) on a free local port, with Django's mail pointed at it.

    `.refuse = True` answers 421 to every message; `.stop()` refuses the connection itself until `.start()`.
    """
    from aiosmtpd.controller import Controller

    port = free_port()
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_TIMEOUT = 5
    inbox.controller = controller
    inbox.port = port
    yield inbox
    if inbox.running:
        controller.stop()


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache (the dashboard caches the data source list)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def now(time_machine, settings):
    """A frozen clock (on a whole second) and the stuck limits the list tests' thresholds are written for."""
    from django.utils import timezone

    settings.STUCK_PENDING_MINUTES = 30
    settings.STUCK_RUNNING_MINUTES = 120
    frozen = timezone.now().replace(microsecond=0)
    time_machine.move_to(frozen, tick=False)
    return frozen

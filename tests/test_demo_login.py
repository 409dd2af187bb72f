"""The first login `make run` creates (demo/login.py): one superuser, once, its password shown once."""

import io

import pytest
from django.contrib.auth import authenticate, get_user_model

from demo.login import ensure_login

pytestmark = pytest.mark.django_db


def test_a_fresh_dashboard_gets_one_superuser_whose_password_is_printed_once():
    first_out, second_out = io.StringIO(), io.StringIO()

    password = ensure_login(out=first_out)
    again = ensure_login(out=second_out)

    [user] = get_user_model().objects.all()
    assert user.username == "admin" and user.is_superuser
    assert password and authenticate(username="admin", password=password) == user
    assert first_out.getvalue().count(password) == 1
    assert again is None and password not in second_out.getvalue()


def test_nothing_is_created_when_a_user_exists(django_user_model):
    django_user_model.objects.create_user(username="olivia", password="pw-olivia-1")
    out = io.StringIO()

    assert ensure_login(out=out) is None
    assert list(django_user_model.objects.values_list("username", flat=True)) == ["olivia"]
    assert "no login created" in out.getvalue()

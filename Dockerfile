# Production image: gunicorn serves the web app (whitenoise serves static files); the same image runs Celery.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VAR_DIR=/app/var

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# collectstatic needs settings but no database, broker or real API: the Protecto values are placeholders.
RUN SECRET_KEY=collectstatic-only-not-a-real-key-0123456789 PROTECTO_API_URL=http://collectstatic.invalid \
    PROTECTO_AUTH_TOKEN=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
    && useradd --system --uid 10001 --home-dir /app scans \
    && mkdir -p /app/var \
    && chown -R scans /app/var

USER scans
EXPOSE 8000
CMD ["gunicorn", "dashboard.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]

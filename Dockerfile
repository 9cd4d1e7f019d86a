# The zoho-moodle-sync image: one image for the API, the workers and the migration step; the
# command chooses (`serve`, `worker`, `db upgrade`). Configuration comes from the environment.
#
#   docker build -t zoho-moodle-sync .
#   docker run --env-file .env zoho-moodle-sync db upgrade
#   docker run --env-file .env -p 8000:8000 zoho-moodle-sync serve
#
# See docs/deploy.md.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/zoho-moodle-sync
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backend ./backend
RUN /opt/zoho-moodle-sync/bin/pip install .

FROM python:3.11-slim
# An unprivileged account; its home is the working directory, where an embedded SQLite database
# (./data/...) would go when no DATABASE_URL is given.
RUN useradd --system --uid 10001 --user-group --create-home \
        --home-dir /var/lib/zoho-moodle-sync --shell /usr/sbin/nologin zms
COPY --from=build /opt/zoho-moodle-sync /opt/zoho-moodle-sync
ENV PATH=/opt/zoho-moodle-sync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000
USER zms
WORKDIR /var/lib/zoho-moodle-sync
EXPOSE 8000
# The API answers 200 on /v1/health when its database answers (503 otherwise). The slim image has
# no curl; Python's urllib raises, and so exits non-zero, on anything but a 2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v1/health' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["zoho-moodle-sync"]
CMD ["serve"]

# batch-monitor: the daemon, its CLI and its /metrics exporter, as one image.
#   docker build -t batch-monitor .
#   docker run -v bm-data:/data -p 127.0.0.1:9464:9464 -e ANTHROPIC_ADMIN_KEY=... batch-monitor
# The stack (PostgreSQL, Prometheus, Grafana, the simulator for a demo): docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# 1. Dependencies alone, from pyproject.toml: this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 2. The code, installed without dependencies (its migrations ship inside the package).
COPY README.md ./
COPY monitor ./monitor
COPY alembic ./alembic
RUN pip install --no-deps . \
 && rm -rf /src/build /src/*.egg-info

# 3. Run as an unprivileged user; SQLite (the default store) lives on the /data volume.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin monitor \
 && mkdir -p /data \
 && chown monitor:monitor /data
USER monitor
WORKDIR /data
VOLUME ["/data"]

ENV MONITOR_DATABASE_URL=sqlite:////data/batch-monitor.db \
    MONITOR_METRICS_HOST=0.0.0.0 \
    MONITOR_METRICS_PORT=9464
EXPOSE 9464

# The slim image has no curl: ask /healthz with Python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["batch-monitor"]
CMD ["run", "--upgrade"]

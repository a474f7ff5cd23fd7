# flagedge: edge flag-evaluation proxy. Configure with FLAGEDGE_* environment variables
# (see config/flagedge.toml) or mount a TOML file and set FLAGEDGE_CONFIG.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, read from pyproject.toml, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-compile -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY proxy ./proxy
COPY config ./config
RUN pip install --no-compile --no-deps . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin flagedge

USER 10001
ENV FLAGEDGE_HOST=0.0.0.0 \
    FLAGEDGE_PORT=8080 \
    FLAGEDGE_SYNC_PORT=8015
# 8080: HTTP (OFREP, SSE, admin API); 8015: flagd sync over gRPC (flagd's in-process providers).
EXPOSE 8080 8015

HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('FLAGEDGE_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2).status == 200 else 1)"]

# Exec form: flagedge is PID 1 and receives SIGTERM itself (graceful shutdown).
ENTRYPOINT ["flagedge", "serve"]

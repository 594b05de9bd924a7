# tensorinit service: `docker build -t tensorinit-service .` then `docker run -p 8000:8000 tensorinit-service`.
# Kept in step with `make run`: the same factory, HOST/PORT from the environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The project and its runtime dependencies only (torch is a dev extra, not installed).
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install . && rm -rf /root/.cache

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin tensorinit

# Algorithm 2's numba kernels compile once here, into a cache the service then loads
# in a second instead of compiling at every start. numba keys its cache by CPU: a host
# unlike the build machine compiles once at start (readiness waits for it); the bytes
# are the same either way.
ENV NUMBA_CACHE_DIR=/app/.numba-cache
RUN python -c "from service.core.algorithms import warm_up; warm_up()" && chown -R tensorinit /app/.numba-cache
USER tensorinit

ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000

# slim has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"

# exec: the server is PID 1 and gets SIGTERM for a graceful shutdown; service.api.serve is
# the uvicorn command line that then exits 0 (uvicorn alone re-raises the signal: 143).
CMD ["sh", "-c", "exec python -m service.api.serve service.api.app:create_app --factory --host \"${HOST:-0.0.0.0}\" --port \"${PORT:-8000}\""]

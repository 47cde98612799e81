# healer as a container: docker build -t healer . (compose.yml builds it as healer:local)
#
#   docker run -v ./healer.yml:/etc/healer/healer.yml:ro healer            # serve
#   docker run -v ./healer.yml:/etc/healer/healer.yml:ro healer check-config /etc/healer/healer.yml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY healer ./healer
COPY handlers ./handlers
RUN pip install . && rm -rf /src

# Not root: healer needs no privilege of its own (Docker goes through the socket proxy).
RUN useradd --system --uid 10001 --home-dir /var/lib/healer --shell /usr/sbin/nologin healer \
    && mkdir -p /var/lib/healer /etc/healer \
    && chown healer /var/lib/healer
USER healer
WORKDIR /var/lib/healer
VOLUME ["/var/lib/healer"]
EXPOSE 9095

# Liveness only (/health/ready would restart healer whenever Prometheus is away).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9095/health', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["healer"]
CMD ["serve", "--config", "/etc/healer/healer.yml"]

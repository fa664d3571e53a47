FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install . && useradd --create-home --uid 10001 klingbot && mkdir -p /data && chown klingbot /data

USER klingbot
VOLUME ["/data"]
# Relative paths (storage.path = "data/klingbot.sqlite3", videos/) land in the volume.
WORKDIR /data
# Secrets (DISCORD_TOKEN, RUNWARE_API_KEY, RUNWARE_WEBHOOK_SECRET) come from the environment at run time.
ENV KLINGBOT_CONFIG=/data/config.toml
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["klingbot", "health"]
CMD ["klingbot", "run"]

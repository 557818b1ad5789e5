FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
# The simulators and the demo (`pointsync sim`, compose's demo profile); worker/ never
# imports them.
COPY sims ./sims
RUN pip install --no-cache-dir . && useradd --create-home pointsync
USER pointsync
CMD ["celery", "-A", "worker", "worker", "--loglevel", "INFO"]

# PiChat backend: a small production image. Build: docker build -t pichat-backend .
# Run:   docker run -p 8080:8080 -e API_TOKEN=$(openssl rand -hex 32) -v pichat-data:/data pichat-backend

# 1. Production dependencies only, from the lockfile.
FROM oven/bun:1.4.5-slim AS deps
WORKDIR /app
COPY package.json bun.lock ./
# valibot lists TypeScript as an optional peer: --omit=peer keeps 30 MB of compiler out of the image.
RUN bun install --frozen-lockfile --production --omit=peer
# The SQLite default writes here; owned by the runtime user (the distroless "nonroot", uid 65532).
RUN mkdir -p /data && chown 65532:65532 /data

# 2. Runtime: no shell, no package manager, no dev dependencies, no tests.
FROM oven/bun:1.4.5-distroless
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=deps --chown=65532:65532 /data /data
COPY package.json tsconfig.json ./
COPY src ./src
ENV ENVIRONMENT=production \
    SERVER_PORT=8080 \
    HOST=0.0.0.0 \
    SQLITE_PATH=/data/pichat.db
USER 65532:65532
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bun", "-e", "fetch('http://127.0.0.1:8080/health/live').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["bun", "src/index.ts"]

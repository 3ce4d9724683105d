# The mesh CLI in a container: greeters, load clients and the coordination
# commands all run from this one image (`docker compose` builds it).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run build && npm prune --omit=dev
ENV MESH_LOG_FORMAT=json
ENTRYPOINT ["node", "dist/cli/main.js"]

# tenantd image: Node 20, production dependencies plus tsx (the server runs its TypeScript
# sources directly, as `npm start` does).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY gen ./gen
COPY src ./src
COPY tsconfig.json ./
ENV NODE_ENV=production PORT=8080
EXPOSE 8080
USER node
# --max-semi-space-size: see README, "Running in production".
CMD ["node", "--max-semi-space-size=32", "--import", "tsx", "src/main.ts"]

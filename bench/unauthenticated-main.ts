// The bench's baseline server for "every authenticated call's overhead": tenantd exactly as
// src/main.ts starts it, except that each caller is verified on its first call only and then
// trusted, with no per-call rate limit or usage count (AppOptions.benchTrustCallers). Never run
// it as a service: a revoked key keeps working.
import { createApp } from "../src/app.js";
import { loadConfig } from "../src/config.js";
import { createLogger } from "../src/transport/logging.js";

const config = loadConfig();
const log = createLogger(config.logLevel);
const app = await createApp(config, { log, benchTrustCallers: true });
await app.listen();
const stop = () => {
  app.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

// Process entry: config → app → listen → graceful shutdown on SIGTERM/SIGINT.
import { createApp } from "./app.js";
import { loadConfig } from "./config.js";
import { createLogger } from "./transport/logging.js";

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    process.stderr.write(`tenantd: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const log = createLogger(config.logLevel);
  const app = await createApp(config, { log });
  const { port } = await app.listen();
  log.info("listening", {
    port,
    host: config.host,
    database: config.databaseUrl ? "postgres" : `pglite:${config.dataDir}`,
    limiter: config.redisUrl ? "redis" : "in-process",
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn("second signal: exiting now", { signal });
      process.exit(1);
    }
    stopping = true;
    log.info("shutting down", { signal, grace_ms: config.shutdownGraceMs });
    app.close().then(
      () => {
        log.info("stopped");
        process.exit(0);
      },
      (err) => {
        log.error("shutdown failed", { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

main().catch((err) => {
  process.stderr.write(`tenantd: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

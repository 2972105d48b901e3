import { Redis } from "ioredis";

// Redis connections for tenantd. Every command is bounded by `commandTimeout`, and the offline
// queue is off: while Redis is down, commands fail at once instead of piling up behind a
// reconnect, so a dead Redis never hangs a request. Reconnection goes on in the background.

export interface RedisOptions {
  url: string;
  timeoutMs: number;
  /** Name shown in `CLIENT LIST`, to tell tenantd's connections apart. */
  name?: string;
}

export function createRedis(opts: RedisOptions): Redis {
  return new Redis(opts.url, {
    commandTimeout: opts.timeoutMs,
    connectTimeout: Math.max(1000, opts.timeoutMs * 10),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectionName: opts.name ?? "tenantd",
    // Reconnect quickly at first, then at most every 2 s, forever.
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    lazyConnect: false,
  });
}

/** Resolves when the connection is ready, or rejects after `ms`. */
export function whenReady(redis: Redis, ms: number): Promise<void> {
  if (redis.status === "ready") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not ready after ${ms} ms`));
    }, ms);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off("ready", onReady);
    };
    redis.on("ready", onReady);
  });
}

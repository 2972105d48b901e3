import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as net from "node:net";
import type { Redis } from "ioredis";
import type { RateLimiter } from "../../src/services/rate-limit/types.js";
import { createMemoryRateLimiter } from "../../src/store/memory/rate-limiter.js";
import { whenReady } from "../../src/store/redis/client.js";
import { createRateLimitRedis, createRedisRateLimiter } from "../../src/store/redis/rate-limiter.js";

// Shared by the limiter tests: the two implementations behind the port, fresh tenant ids (the
// CI Redis is shared with other test files and other engineers), and a real redis-server the
// fault tests own, to kill and pause.

export const REDIS_URL = process.env.REDIS_URL || undefined;

/** A tenant id no other test (or earlier run) uses. */
export function freshTenant(): string {
  return `ten_t${randomBytes(8).toString("hex")}`;
}

export interface LimiterCase {
  name: string;
  /** Why the case cannot run here, or undefined. */
  skip: string | undefined;
  make(): Promise<RateLimiter>;
}

export const LIMITERS: LimiterCase[] = [
  { name: "memory", skip: undefined, make: async () => createMemoryRateLimiter() },
  {
    name: "redis",
    skip: REDIS_URL ? undefined : "REDIS_URL is not set",
    make: async () => {
      const redis = createRateLimitRedis({ url: REDIS_URL as string, timeoutMs: 2000 });
      await whenReady(redis, 5000);
      return createRedisRateLimiter({ redis, ownsConnection: true });
    },
  },
];

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
export const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Milliseconds since an hrtime origin. */
export function msSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

export function hasRedisServer(): boolean {
  return spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status === 0;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once something on the port answers PING with PONG. */
async function waitForPong(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      let buf = "";
      s.setTimeout(200, () => {
        s.destroy();
        resolve(false);
      });
      s.on("connect", () => s.write("PING\r\n"));
      s.on("data", (d) => {
        buf += d.toString();
        if (buf.includes("PONG")) {
          s.destroy();
          resolve(true);
        }
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`redis-server on ${port} did not answer within ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** A redis-server child process on a free port, without persistence, that tests may kill or pause. */
export class RedisServer {
  private child: ChildProcess | undefined;
  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const s = new RedisServer(await freePort());
    await s.restart();
    return s;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts the server (again, on the same port) and waits until it answers. */
  async restart(): Promise<void> {
    const child = spawn(
      "redis-server",
      ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
      { stdio: "ignore" },
    );
    this.child = child;
    await waitForPong(this.port, 5000);
  }

  /** SIGKILL; resolves when the process is gone, so the port is free again. */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => c.once("exit", () => resolve()));
    c.kill("SIGKILL");
    await gone;
  }

  pause(): void {
    this.child?.kill("SIGSTOP");
  }

  resume(): void {
    this.child?.kill("SIGCONT");
  }

  async stop(): Promise<void> {
    this.resume();
    await this.kill();
  }
}

/** Waits until the ioredis connection is ready again (after a restart), or throws. */
export async function ready(redis: Redis, ms = 5000): Promise<void> {
  await whenReady(redis, ms);
}

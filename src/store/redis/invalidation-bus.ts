import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import type { Invalidation, InvalidationBus } from "../../services/invalidation.js";

// Cache invalidation across replicas over Redis pub/sub. An event applies locally first (so this
// replica is consistent before the RPC answers), then is published. Other replicas apply it when
// the message arrives, typically within a millisecond. Pub/sub does not replay messages missed
// while a subscriber was disconnected, so on every (re)subscription a replica drops its whole
// cache; while Redis is unreachable, entries still expire after the cache TTL, which bounds how
// long a revoked key can stay accepted on another replica.

const CHANNEL = "tenantd:invalidate";

export function createRedisInvalidationBus(opts: {
  publisher: Redis;
  subscriber: Redis;
  onError: (err: unknown) => void;
}): InvalidationBus {
  const origin = randomUUID();
  const handlers: Array<(e: Invalidation) => void> = [];
  const apply = (e: Invalidation) => {
    for (const h of handlers) h(e);
  };

  const subscribe = () => {
    opts.subscriber.subscribe(CHANNEL).then(
      () => apply({ kind: "all" }),
      (err) => opts.onError(err),
    );
  };
  opts.subscriber.on("ready", subscribe);
  // The connection may already be up (it connects while the publisher is awaited): then no
  // "ready" event comes until a reconnect, and waiting for one would leave this replica deaf to
  // every invalidation.
  if (opts.subscriber.status === "ready") subscribe();
  opts.subscriber.on("message", (channel: string, raw: string) => {
    if (channel !== CHANNEL) return;
    try {
      const msg = JSON.parse(raw) as { origin: string; event: Invalidation };
      if (msg.origin !== origin) apply(msg.event);
    } catch (err) {
      opts.onError(err);
    }
  });
  // Errors surface through commands and the readiness probe; without a listener ioredis would
  // print every reconnect failure.
  opts.subscriber.on("error", () => {});

  return {
    async publish(event) {
      apply(event);
      try {
        await opts.publisher.publish(CHANNEL, JSON.stringify({ origin, event }));
      } catch (err) {
        opts.onError(err);
      }
    },
    subscribe(handler) {
      handlers.push(handler);
    },
    async close() {
      opts.subscriber.disconnect();
    },
  };
}

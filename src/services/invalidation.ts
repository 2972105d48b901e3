// Invalidation of cached verification results. Revoke, rotate, suspend, reactivate and delete
// publish an event; every replica's cache drops the affected entries. Locally the event applies
// synchronously before the RPC answers, so this process never accepts a revoked key afterwards;
// other replicas get it through Redis pub/sub within the publish round trip.

export type Invalidation = { kind: "key"; kid: string } | { kind: "tenant"; tenantId: string } | { kind: "all" };

export interface InvalidationBus {
  /** Applies the event locally, then broadcasts it to other replicas (best effort). */
  publish(event: Invalidation): Promise<void>;
  /** Registers the local handler; called for local and remote events. */
  subscribe(handler: (event: Invalidation) => void): void;
  close(): Promise<void>;
}

/** Single-process bus: used when REDIS_URL is unset. */
export function createLocalInvalidationBus(): InvalidationBus {
  const handlers: Array<(e: Invalidation) => void> = [];
  return {
    async publish(event) {
      for (const h of handlers) h(event);
    },
    subscribe(handler) {
      handlers.push(handler);
    },
    async close() {},
  };
}

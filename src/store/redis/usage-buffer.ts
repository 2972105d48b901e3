import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { MeterBatch, MeterCell } from "../../services/usage/meter.js";
import { type Touched, toStoreCells, touchedOf, type UsageSink, type ZoneOf } from "../../services/usage/pipeline.js";
import type { UsageStore } from "../usage-ports.js";

// Usage buffered in Redis between the replicas' flushes and the roll-up into Postgres.
//
// Keys (hash-tagged by tenant, so a tenant's keys share a cluster slot; the dirty set is global):
//   u:{ten_…}:p            pending hash: `q|<slot>|<metric>|<key>|<method>` quantity,
//                          `n|…` events, `t|…` latest event time (epoch ms)
//   u:{ten_…}:s            the snapshot being rolled up: a renamed pending hash plus `id`, the
//                          roll-up id it is applied under
//   u:{ten_…}:b:<batch>    marker of an applied flush batch (24 h)
//   u:{ten_…}:e:<event id> body hash of a reported event id (35 days)
//   u:<ns>:dirty           tenants with pending or snapshot hashes
//   u:<ns>:lock            the roll-up lock: the replica holding it rolls up and compacts
// `<ns>` is the deployment's namespace (a random id kept in its database), so deployments that
// share a Redis never roll up each other's usage into the wrong database.
//
// Once per batch: a flush adds a tenant's cells in one Lua call that first sets the batch marker
// (a retried batch finds it and adds nothing). Once per roll-up: the snapshot script renames the
// pending hash and stamps it with the roll-up id, or returns the snapshot left by an interrupted
// roll-up with its original id; Postgres records that id in the same transaction as the counts
// (UsageStore.applyBatch), so a snapshot applied twice counts once; the finish script deletes the
// snapshot only after that commit.
//
// Loss bound: usage lives only in Redis between its flush and the next roll-up. If Redis loses its
// data then (a crash without persistence), that is what is lost: at most one cycle of flushed
// usage while a roll-up leader is alive (the leader rolls up right after its own flush each cycle).
// While Redis is unreachable, flushes fail and the batches stay in process to be retried.

const FLUSH_LUA = `
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 0} end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
local function add(f, q, n, t)
  redis.call('HINCRBY', KEYS[1], 'q|' .. f, q)
  redis.call('HINCRBY', KEYS[1], 'n|' .. f, n)
  local cur = tonumber(redis.call('HGET', KEYS[1], 't|' .. f) or '0')
  if t > cur then redis.call('HSET', KEYS[1], 't|' .. f, t) end
end
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  add(ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]))
  i = i + 4
end
local dup = 0
for k = 4, #KEYS do
  if redis.call('SET', KEYS[k], ARGV[i], 'NX', 'PX', ARGV[3]) then
    add(ARGV[i + 1], ARGV[i + 2], 1, tonumber(ARGV[i + 3]))
  else
    dup = dup + 1
  end
  i = i + 4
end
redis.call('SADD', KEYS[3], ARGV[1])
return {1, dup}
`;

const SNAPSHOT_LUA = `
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[2])
    return {}
  end
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], 'id', ARGV[1])
end
return redis.call('HGETALL', KEYS[2])
`;

const FINISH_LUA = `
if redis.call('HGET', KEYS[2], 'id') == ARGV[1] then redis.call('DEL', KEYS[2]) end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return 1
`;

const LOCK_LUA = `
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`;

const BATCH_MARKER_TTL_MS = 24 * 3_600_000;
const EVENT_TTL_MS = 35 * 86_400_000;

type Cmd = (...args: (string | number)[]) => Promise<unknown>;

export interface RedisUsageBufferOptions {
  redis: Redis;
  store: UsageStore;
  zoneOf: ZoneOf;
  /** How long the roll-up lock lasts without renewal, ms (renewed every cycle). */
  lockTtlMs: number;
  /** The deployment's namespace of the dirty set and the lock: `[0-9a-z]+`. */
  namespace: string;
  /** Most tenants rolled up per cycle; the rest wait for the next. Default 2000. */
  maxTenantsPerCycle?: number;
}

const prefixOf = (tenantId: string) => `u:{${tenantId}}:`;

function fieldOf(c: MeterCell): string {
  return `${c.slot}|${c.metric}|${c.keyId}|${c.method}`;
}

/** Cells of a snapshot hash (HGETALL's flat list). */
export function cellsOfSnapshot(tenantId: string, flat: readonly string[]): { id: string; cells: MeterCell[] } {
  let id = "";
  const cells = new Map<string, MeterCell>();
  const cell = (f: string): MeterCell => {
    let c = cells.get(f);
    if (c === undefined) {
      const [slot, metric, keyId, method] = f.split("|") as [string, string, string, string];
      c = { tenantId, metric, keyId, method, slot: Number(slot), quantity: 0, events: 0, lastTimeMs: 0 };
      cells.set(f, c);
    }
    return c;
  };
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i] as string;
    const value = flat[i + 1] as string;
    if (name === "id") {
      id = value;
      continue;
    }
    const kind = name.slice(0, 1);
    const c = cell(name.slice(2));
    if (kind === "q") c.quantity = Number(value);
    else if (kind === "n") c.events = Number(value);
    else if (kind === "t") c.lastTimeMs = Number(value);
  }
  return { id, cells: [...cells.values()] };
}

export interface RedisUsageBuffer extends UsageSink {
  /** Duplicate event ids met by flushes (counted once, elsewhere). */
  readonly duplicateEvents: number;
}

export function createRedisUsageBuffer(opts: RedisUsageBufferOptions): RedisUsageBuffer {
  const { redis } = opts;
  const define = (name: string, lua: string): Cmd => {
    redis.defineCommand(name, { lua });
    return ((redis as unknown as Record<string, Cmd>)[name] as Cmd).bind(redis);
  };
  const flushCmd = define("tenantdUsageFlush", FLUSH_LUA);
  const snapshotCmd = define("tenantdUsageSnapshot", SNAPSHOT_LUA);
  const finishCmd = define("tenantdUsageFinish", FINISH_LUA);
  const lockCmd = define("tenantdUsageLock", LOCK_LUA);
  const token = randomBytes(12).toString("hex");
  if (!/^[0-9a-z]{1,64}$/.test(opts.namespace)) throw new RangeError("usage namespace must be [0-9a-z]{1,64}");
  const DIRTY = `u:${opts.namespace}:dirty`;
  const LOCK = `u:${opts.namespace}:lock`;
  let duplicateEvents = 0;

  async function writeTenant(batchId: string, tenantId: string, cells: MeterCell[], events: MeterBatch["events"]) {
    const p = prefixOf(tenantId);
    const keys = [`${p}p`, `${p}b:${batchId}`, DIRTY, ...events.map((e) => `${p}e:${e.eventId}`)];
    const args: (string | number)[] = [tenantId, BATCH_MARKER_TTL_MS, EVENT_TTL_MS, cells.length];
    for (const c of cells) args.push(fieldOf(c), c.quantity, c.events, c.lastTimeMs);
    for (const e of events) args.push(e.bodyHash, fieldOf(e.cell), e.cell.quantity, e.cell.lastTimeMs);
    const res = (await flushCmd(keys.length, ...keys, ...args)) as [number, number];
    duplicateEvents += res[1];
  }

  async function leads(): Promise<boolean> {
    return (await lockCmd(1, LOCK, token, opts.lockTtlMs)) === 1;
  }

  return {
    get duplicateEvents() {
      return duplicateEvents;
    },
    async write(batch) {
      const cells = new Map<string, MeterCell[]>();
      const events = new Map<string, MeterBatch["events"]>();
      for (const c of batch.cells) {
        const l = cells.get(c.tenantId);
        if (l) l.push(c);
        else cells.set(c.tenantId, [c]);
      }
      for (const e of batch.events) {
        const l = events.get(e.tenantId);
        if (l) l.push(e);
        else events.set(e.tenantId, [e]);
      }
      // Tenants deleted meanwhile get nothing written: their keys are gone and stay gone.
      const tenants = new Set<string>();
      await Promise.all(
        [...new Set([...cells.keys(), ...events.keys()])].map(async (t) => {
          if ((await opts.zoneOf(t)) !== null) tenants.add(t);
        }),
      );
      // One Lua call per tenant, all sent at once on the connection (pipelined).
      await Promise.all([...tenants].map((t) => writeTenant(batch.id, t, cells.get(t) ?? [], events.get(t) ?? [])));
      return [];
    },
    async settle(): Promise<Touched[]> {
      if (!(await leads())) return [];
      const dirty = (await redis.smembers(DIRTY)).slice(0, opts.maxTenantsPerCycle ?? 2000);
      if (dirty.length === 0) return [];
      const rollupId = `r${Date.now().toString(36)}${randomBytes(6).toString("hex")}`;
      const snaps = await Promise.all(
        dirty.map(async (t) => {
          const p = prefixOf(t);
          const flat = (await snapshotCmd(3, `${p}p`, `${p}s`, DIRTY, rollupId, t)) as string[];
          return { tenantId: t, ...cellsOfSnapshot(t, flat) };
        }),
      );
      // Snapshots are applied grouped by their roll-up id: this one's, and any left by an
      // interrupted roll-up under its own id.
      const groups = new Map<string, { tenants: string[]; cells: MeterCell[] }>();
      for (const s of snaps) {
        if (s.id === "") continue;
        let g = groups.get(s.id);
        if (!g) {
          g = { tenants: [], cells: [] };
          groups.set(s.id, g);
        }
        g.tenants.push(s.tenantId);
        for (const c of s.cells) g.cells.push(c);
      }
      const touched: Touched[] = [];
      for (const [id, g] of groups) {
        const { cells } = await toStoreCells(g.cells, [], opts.zoneOf);
        await opts.store.applyBatch(id, cells);
        for (const t of touchedOf(cells)) touched.push(t);
        await Promise.all(
          g.tenants.map((t) => {
            const p = prefixOf(t);
            return finishCmd(3, `${p}p`, `${p}s`, DIRTY, id, t);
          }),
        );
      }
      return touched;
    },
    leads,
  };
}

import type { Redis } from "ioredis";
import type {
  CounterSpec,
  CounterState,
  FinishOutcome,
  IdempotencyKey,
  QuotaOutcome,
  QuotaStore,
  ReservationInit,
  ReservationRecord,
  ReservationState,
} from "../limit-ports.js";

// Usage counters in Redis. Every operation is ONE Lua script, so a decision and its counting are
// atomic across replicas: consume checks every BLOCK counter and increments all of them, or none,
// and two callers can never both take the last unit.
//
// Keys, all hash-tagged by tenant so that Redis Cluster keeps a tenant's keys on one slot (the
// scripts reach reservation and counter keys named inside them, which a cluster accepts only on
// the slot of the declared keys):
//   q:{ten_…}:c:<counter id>   hash {u: used, r: reserved}; expires after its period's end + margin
//   q:{ten_…}:rsv:<rsv id>     hash of a reservation; kept 24 h after it could have expired
//   q:{ten_…}:rx               sorted set of held reservations by expiry time
//   q:{ten_…}:req:<request id> hash {h: body hash, res: first result}; 24 h (request_id replay)
//
// Time: the scripts take `now` from the caller instead of Redis TIME. The period a counter belongs
// to is computed by the caller anyway (it needs the tenant's time zone), so one clock decides both
// the period and reservation expiry; the in-process store behaves identically, and tests move a
// manual clock instead of sleeping. Replica clock skew (NTP: milliseconds) only shifts when a
// reservation expires by that much. TTLs are set relative (PEXPIRE expireAt − now), so a caller
// clock that is off does not make Redis drop keys early.
//
// Expired reservations release themselves: every script first purges the tenant's reservations
// whose expiry is ≤ now (at most 100 per call, so that a script stays short), subtracting their
// holds from their counters and marking them EXPIRED.
//
// Faults: every command is bounded by the connection's commandTimeout and the connection has no
// offline queue (src/store/redis/client.ts), so a dead or stalled Redis fails calls within the
// timeout. This store only reports failures; LimitService applies the configured fail mode.

const PRELUDE = `
local now = tonumber(ARGV[1])
local prefix = ARGV[2]
local function purge()
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(ids) do
    local rk = prefix .. 'rsv:' .. id
    local r = redis.call('HMGET', rk, 'state', 'amount', 'counters', 'expires')
    if r[1] == 'held' then
      local amount = tonumber(r[2])
      for cid in string.gmatch(r[3] or '', '[^ ]+') do
        local ck = prefix .. 'c:' .. cid
        if redis.call('EXISTS', ck) == 1 then redis.call('HINCRBY', ck, 'r', -amount) end
      end
      redis.call('HSET', rk, 'state', 'expired', 'finished', r[4])
    end
    redis.call('ZREM', KEYS[1], id)
  end
end
purge()
`;

/**
 * KEYS: rx, request-id key (or a placeholder), reservation key (or a placeholder), counters.
 * ARGV: now, prefix, mode (t track, c consume, r reserve), amount, idempotency hash ('' none),
 * idempotency ttl ms, reservation id, reservation expiry, counter ids joined by spaces, user,
 * resource, metric, then per counter: limit, block (1/0), ttl ms.
 * Returns: status (0 fresh, 1 duplicate, 2 conflict), allowed, reservation id ('-' none), expiry,
 * then used and reserved of each counter.
 */
const COUNT_LUA = `${PRELUDE}
local mode = ARGV[3]
local amount = tonumber(ARGV[4])
local idem = ARGV[5]
if idem ~= '' then
  local prev = redis.call('HMGET', KEYS[2], 'h', 'res')
  if prev[1] then
    if prev[1] ~= idem then return {2} end
    local out = {1}
    for v in string.gmatch(prev[2], '[^ ]+') do out[#out + 1] = v end
    return out
  end
end
local n = #KEYS - 3
local used, held = {}, {}
local allowed = 1
for i = 1, n do
  local s = redis.call('HMGET', KEYS[3 + i], 'u', 'r')
  used[i] = tonumber(s[1] or '0')
  held[i] = tonumber(s[2] or '0')
  local base = 12 + (i - 1) * 3
  local limit = tonumber(ARGV[base + 1])
  if mode ~= 't' and ARGV[base + 2] == '1' and limit >= 0 and used[i] + held[i] + amount > limit then
    allowed = 0
  end
end
local rsv, expires = '-', 0
if allowed == 1 then
  local field = 'u'
  if mode == 'r' then field = 'r' end
  for i = 1, n do
    redis.call('HINCRBY', KEYS[3 + i], field, amount)
    if mode == 'r' then held[i] = held[i] + amount else used[i] = used[i] + amount end
    redis.call('PEXPIRE', KEYS[3 + i], ARGV[12 + (i - 1) * 3 + 3])
  end
  if mode == 'r' then
    rsv = ARGV[7]
    expires = tonumber(ARGV[8])
    redis.call('HSET', KEYS[3], 'state', 'held', 'amount', ARGV[4], 'created', ARGV[1], 'expires', ARGV[8],
      'counters', ARGV[9], 'user', ARGV[10], 'resource', ARGV[11], 'metric', ARGV[12], 'committed', '0', 'finished', '0')
    redis.call('PEXPIRE', KEYS[3], expires - now + 86400000)
    redis.call('ZADD', KEYS[1], expires, rsv)
    -- A backstop only: the set empties itself as reservations end, and Redis drops empty sets.
    redis.call('PEXPIRE', KEYS[1], 40 * 86400000)
  end
end
local out = {0, allowed, rsv, string.format('%d', expires)}
for i = 1, n do
  out[#out + 1] = string.format('%d', used[i])
  out[#out + 1] = string.format('%d', held[i])
end
if idem ~= '' then
  local saved = {}
  for i = 2, #out do saved[#saved + 1] = tostring(out[i]) end
  redis.call('HSET', KEYS[2], 'h', idem, 'res', table.concat(saved, ' '))
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return out
`;

/** KEYS: rx, counters. ARGV: now, prefix. Returns used and reserved of each counter. */
const CHECK_LUA = `${PRELUDE}
local out = {}
for i = 2, #KEYS do
  local s = redis.call('HMGET', KEYS[i], 'u', 'r')
  out[#out + 1] = s[1] or '0'
  out[#out + 1] = s[2] or '0'
end
return out
`;

/**
 * KEYS: rx, reservation. ARGV: now, prefix, op (c commit, x release, g get), actual amount.
 * Returns: status (0 not found, 1 ok, 2 state conflict), then the reservation as HGETALL pairs.
 */
const FINISH_LUA = `${PRELUDE}
local op = ARGV[3]
if redis.call('EXISTS', KEYS[2]) == 0 then return {0} end
local r = redis.call('HMGET', KEYS[2], 'state', 'amount', 'counters', 'committed')
local status = 1
if op == 'c' then
  local actual = tonumber(ARGV[4])
  if r[1] == 'held' then
    local amount = tonumber(r[2])
    for cid in string.gmatch(r[3] or '', '[^ ]+') do
      local ck = prefix .. 'c:' .. cid
      -- A counter whose period ended long ago is gone; the cost then counts nowhere rather than
      -- in a key without expiry.
      if redis.call('EXISTS', ck) == 1 then
        redis.call('HINCRBY', ck, 'r', -amount)
        redis.call('HINCRBY', ck, 'u', actual)
      end
    end
    redis.call('HSET', KEYS[2], 'state', 'committed', 'committed', ARGV[4], 'finished', ARGV[1])
    redis.call('ZREM', KEYS[1], ARGV[5])
  elseif not (r[1] == 'committed' and tonumber(r[4]) == actual) then
    status = 2
  end
elseif op == 'x' then
  if r[1] == 'held' then
    local amount = tonumber(r[2])
    for cid in string.gmatch(r[3] or '', '[^ ]+') do
      local ck = prefix .. 'c:' .. cid
      if redis.call('EXISTS', ck) == 1 then redis.call('HINCRBY', ck, 'r', -amount) end
    end
    redis.call('HSET', KEYS[2], 'state', 'released', 'finished', ARGV[1])
    redis.call('ZREM', KEYS[1], ARGV[5])
  elseif r[1] ~= 'released' then
    status = 2
  end
end
local out = {status}
for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do out[#out + 1] = v end
return out
`;

type Cmd = (...args: Array<string | number>) => Promise<unknown[]>;

/** The key prefix of a tenant; the braces make the tenant id the cluster hash tag. */
export function quotaPrefix(tenantId: string): string {
  return `q:{${tenantId}}:`;
}

function assertId(what: string, id: string): void {
  // Ids end up inside key names and in space-separated lists inside the scripts.
  if (id === "" || /[\s{}]/.test(id)) throw new RangeError(`bad ${what}: ${JSON.stringify(id)}`);
}

export interface RedisQuotaStoreOptions {
  /** A connection made with createRedis (command timeout, no offline queue). */
  redis: Redis;
  /** Whether close() disconnects the connection. Default false. */
  ownsConnection?: boolean;
}

export function createRedisQuotaStore(opts: RedisQuotaStoreOptions): QuotaStore {
  const { redis } = opts;
  const define = (name: string, lua: string): Cmd => {
    // No fixed numberOfKeys: the first argument of each call is the key count.
    redis.defineCommand(name, { lua });
    return ((redis as unknown as Record<string, Cmd>)[name] as Cmd).bind(redis);
  };
  const count = define("tenantdQuotaCount", COUNT_LUA);
  const check = define("tenantdQuotaCheck", CHECK_LUA);
  const finish = define("tenantdQuotaFinish", FINISH_LUA);

  const states = (flat: unknown[], from: number, n: number): CounterState[] => {
    const out: CounterState[] = new Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = { used: Number(flat[from + 2 * i]), reserved: Number(flat[from + 2 * i + 1]) };
    }
    return out;
  };

  async function run(
    mode: "t" | "c" | "r",
    tenantId: string,
    counters: CounterSpec[],
    amount: number,
    now: number,
    idem: IdempotencyKey | undefined,
    init?: ReservationInit,
  ): Promise<QuotaOutcome> {
    const p = quotaPrefix(tenantId);
    for (const c of counters) assertId("counter id", c.id);
    if (idem) assertId("request id", idem.requestId);
    if (init) assertId("reservation id", init.id);
    const keys = [
      `${p}rx`,
      idem ? `${p}req:${idem.requestId}` : `${p}req:-`,
      init ? `${p}rsv:${init.id}` : `${p}rsv:-`,
      ...counters.map((c) => `${p}c:${c.id}`),
    ];
    const args: Array<string | number> = [
      now,
      p,
      mode,
      amount,
      idem?.hash ?? "",
      idem?.ttlMs ?? 0,
      init?.id ?? "",
      init ? now + init.ttlMs : 0,
      counters.map((c) => c.id).join(" "),
      init?.userId ?? "",
      init?.resource ?? "",
      init?.metric ?? "",
    ];
    for (const c of counters) args.push(c.limit, c.block ? 1 : 0, Math.max(1, c.expireAtMs - now));
    const out = await count(keys.length, ...keys, ...args);
    const status = Number(out[0]);
    if (status === 2) return { kind: "conflict" };
    const rsv = String(out[2]);
    return {
      kind: "done",
      allowed: Number(out[1]) === 1,
      duplicate: status === 1,
      reservationId: rsv === "-" ? "" : rsv,
      expiresAtMs: Number(out[3]),
      states: states(out, 4, counters.length),
    };
  }

  async function fin(
    op: "c" | "x" | "g",
    tenantId: string,
    id: string,
    actual: number,
    now: number,
  ): Promise<FinishOutcome> {
    // Ids come from clients here; one that cannot be ours is simply not found.
    if (id === "" || /[\s{}]/.test(id)) return { kind: "not_found" };
    const p = quotaPrefix(tenantId);
    const out = await finish(2, `${p}rx`, `${p}rsv:${id}`, now, p, op, actual, id);
    const status = Number(out[0]);
    if (status === 0) return { kind: "not_found" };
    const h: Record<string, string> = {};
    for (let i = 1; i + 1 < out.length; i += 2) h[String(out[i])] = String(out[i + 1]);
    const reservation: ReservationRecord = {
      id,
      userId: h.user ?? "",
      resource: h.resource ?? "",
      metric: h.metric ?? "",
      amount: Number(h.amount ?? 0),
      state: (h.state ?? "held") as ReservationState,
      createdAtMs: Number(h.created ?? 0),
      expiresAtMs: Number(h.expires ?? 0),
      committedAmount: Number(h.committed ?? 0),
      finishedAtMs: Number(h.finished ?? 0),
      counterIds: (h.counters ?? "").split(" ").filter((s) => s !== ""),
    };
    return status === 1 ? { kind: "ok", reservation } : { kind: "state_conflict", reservation };
  }

  return {
    async check(tenantId, counters, now) {
      const p = quotaPrefix(tenantId);
      for (const c of counters) assertId("counter id", c.id);
      const keys = [`${p}rx`, ...counters.map((c) => `${p}c:${c.id}`)];
      const out = await check(keys.length, ...keys, now, p);
      return states(out, 0, counters.length);
    },
    track: (tenantId, counters, amount, now, idem) => run("t", tenantId, counters, amount, now, idem),
    consume: (tenantId, counters, amount, now, idem) => run("c", tenantId, counters, amount, now, idem),
    reserve: (tenantId, counters, amount, init, now, idem) => run("r", tenantId, counters, amount, now, idem, init),
    commit: (tenantId, id, actual, now) => fin("c", tenantId, id, actual, now),
    release: (tenantId, id, now) => fin("x", tenantId, id, 0, now),
    async getReservation(tenantId, id, now) {
      const r = await fin("g", tenantId, id, 0, now);
      return r.kind === "not_found" ? null : r.reservation;
    },
    async close() {
      if (opts.ownsConnection) redis.disconnect();
    },
  };
}

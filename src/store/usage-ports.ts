// Ports of UsageService's storage. Usage reaches Postgres in batches (never one call at a time):
// the in-process meter aggregates calls and reported events into cells, a flush sends them on
// (to Redis, or straight to Postgres without Redis), and a roll-up applies them to the durable
// rows here. Services see only these interfaces.
//
// Days and months are the tenant's local calendar (its time zone at the time of the roll-up), so
// a month `YYYY-MM` is the same range of day strings for every tenant: `YYYY-MM-01` up to the
// first day of the next month.

/** One aggregated cell: a tenant's metric on one local day, by key and method. */
export interface UsageCell {
  tenantId: string;
  /** Local calendar day in the tenant's time zone, `YYYY-MM-DD`. */
  day: string;
  /** `api_calls`, `llm_tokens`, `storage_bytes`, `bandwidth_bytes` or a custom metric name. */
  metric: string;
  /** The key the usage is attributed to; "" for none. */
  keyId: string;
  /** For `api_calls`: the RPC, `tenantd.v1.TenantService/GetTenant`; "" for reported metrics. */
  method: string;
  /** Sum of the quantities (calls for `api_calls`). */
  quantity: number;
  /** Number of events (calls, or RecordUsage reports). */
  events: number;
  /** Time of the latest event in the cell, epoch ms. */
  lastTimeMs: number;
}

/** A metric's total over a period. */
export interface UsageTotal {
  metric: string;
  quantity: number;
  events: number;
  /** Latest event, epoch ms; null when there was none. */
  lastTimeMs: number | null;
}

/** A metric's total over one local day. */
export interface UsageDayTotal {
  day: string;
  metric: string;
  quantity: number;
  events: number;
}

/** A reported event carrying an idempotency id (RecordUsage with `event_id`). */
export interface UsageEventClaim {
  tenantId: string;
  eventId: string;
  /** Digest of the report's body (metric, quantity, key, user, time). */
  bodyHash: string;
  /** The event's contribution, counted only if the id was not claimed before. */
  cell: UsageCell;
}

export interface ApplyResult {
  /** False when the batch id had been applied before: nothing was written this time. */
  applied: boolean;
  /** Events whose id had been claimed before (same or other body): not counted. */
  duplicateEvents: number;
  /** Cells (and events) of tenants that no longer exist, dropped. */
  droppedCells: number;
}

/** One tenant's totals in a ListTenantUsage page. */
export interface TenantUsageRow {
  tenantId: string;
  /** The sort metric's quantity (0 when the tenant has no usage of it). */
  sortValue: number;
  /** Every metric the tenant used in the period. */
  totals: UsageTotal[];
}

export interface ListTenantUsageQuery {
  /** `YYYY-MM`. */
  period: string;
  /** The metric to sort by. */
  metric: string;
  descending: boolean;
  /** Keyset cursor: rows strictly after (sortValue, tenantId) in the requested order. */
  after?: { sortValue: number; tenantId: string };
  limit: number;
}

/** A detailed row for export: one cell as stored (daily, or monthly after compaction). */
export interface UsageDetailRow {
  /** `YYYY-MM-DD` for daily rows, `YYYY-MM` for compacted monthly rows. */
  date: string;
  metric: string;
  keyId: string;
  method: string;
  quantity: number;
  events: number;
  lastTimeMs: number;
}

export interface UsageAlertRecord {
  id: string;
  tenantId: string;
  metric: string;
  /** The local day concerned, `YYYY-MM-DD`. */
  day: string;
  observed: number;
  baseline: number;
  score: number;
  /** When the anomaly was detected, epoch ms. */
  timeMs: number;
}

export interface ListAlertsQuery {
  tenantId?: string;
  metric?: string;
  /** Detected at or after (epoch ms). */
  startMs?: number;
  /** Detected before (epoch ms). */
  endMs?: number;
  /** Keyset cursor: alerts strictly older than (timeMs, id), newest first. */
  after?: { timeMs: number; id: string };
  limit: number;
}

export interface UsageStore {
  /**
   * Applies one batch exactly once: the batch id is recorded in the same transaction as the
   * counts, so a batch applied again (a retry after a crash or a timeout) writes nothing. Cells
   * add their quantity and events to the daily row and to the month's running total; the last
   * time is the later of the two. Event claims are counted only when their id is new for the
   * tenant. Cells of tenants that do not exist (deleted meanwhile) are dropped.
   */
  applyBatch(batchId: string, cells: readonly UsageCell[], events?: readonly UsageEventClaim[]): Promise<ApplyResult>;
  /** The month's totals per metric (daily and compacted rows alike). */
  monthTotals(tenantId: string, period: string): Promise<UsageTotal[]>;
  /** Daily totals per metric for days in [fromDay, toDay), oldest first. */
  dailyTotals(tenantId: string, fromDay: string, toDay: string, metric?: string): Promise<UsageDayTotal[]>;
  /** Every tenant (with zeros for tenants without usage), sorted by one metric's month total, ties by tenant id. */
  listTenantUsage(q: ListTenantUsageQuery): Promise<TenantUsageRow[]>;
  /** The stored rows of a month for export: daily rows, or the monthly rows once compacted. */
  detail(tenantId: string, period: string): Promise<UsageDetailRow[]>;
  /**
   * Compacts the daily rows of every month that ends on or before `beforeDay` into monthly rows
   * (same key and method), in one transaction per tenant and month; the running totals are
   * untouched. Also forgets batch ids and event ids recorded before `forgetBeforeMs`.
   */
  compact(beforeDay: string, forgetBeforeMs: number): Promise<{ months: number; rowsRemoved: number }>;
  /** Records an alert unless one exists for the tenant, metric and day; true when recorded. */
  recordAlert(alert: UsageAlertRecord): Promise<boolean>;
  /** Alerts, newest first. */
  listAlerts(q: ListAlertsQuery): Promise<UsageAlertRecord[]>;
  /** Removes everything of a tenant (its rows go with the tenant anyway; this is for stragglers). */
  deleteTenant(tenantId: string): Promise<void>;
}

import { randomBytes } from "node:crypto";

// The in-process half of usage metering. Every counted call and every RecordUsage report is
// added to a map in this process (no I/O on the call); a flush takes the map as one batch with a
// unique id and hands it to a UsageSink, which applies each batch id at most once. So a flush
// retried after a timeout or a crash of the far side counts once.
//
// Cells are keyed by a 15-minute UTC slot rather than by a local day: the call path then needs no
// time-zone lookup, and every zone's offset is a whole number of quarter hours, so each slot lies
// inside exactly one local day of any zone. The sink maps slots to the tenant's local days when it
// applies them.

/** Usage slots are 15 minutes of UTC time. */
export const SLOT_MS = 15 * 60 * 1000;

export function slotOf(atMs: number): number {
  return Math.floor(atMs / SLOT_MS);
}

/** One aggregated cell of a batch. */
export interface MeterCell {
  tenantId: string;
  metric: string;
  keyId: string;
  method: string;
  slot: number;
  quantity: number;
  events: number;
  lastTimeMs: number;
}

/** A report with an idempotency id: kept apart so the far side can count it at most once. */
export interface MeterEvent {
  tenantId: string;
  eventId: string;
  bodyHash: string;
  cell: MeterCell;
}

export interface MeterBatch {
  id: string;
  cells: MeterCell[];
  events: MeterEvent[];
}

export class UsageMeter {
  private cells = new Map<string, MeterCell>();
  private events: MeterEvent[] = [];
  private readonly prefix = `b${Date.now().toString(36)}${randomBytes(6).toString("hex")}`;
  private seq = 0;
  /** Quantity units and cells dropped because the pending limit was reached. */
  dropped = 0;

  /** @param maxCells bound on distinct pending cells (memory); beyond it new cells are dropped. */
  constructor(private readonly maxCells = 1_000_000) {}

  /** Counts one call of `method` made with a tenant's key. */
  countCall(tenantId: string, keyId: string, method: string, atMs: number): void {
    this.add(tenantId, "api_calls", keyId, method, atMs, 1);
  }

  /** Adds one event of `quantity` units. */
  add(tenantId: string, metric: string, keyId: string, method: string, atMs: number, quantity: number): void {
    const slot = Math.floor(atMs / SLOT_MS);
    const k = `${tenantId}|${metric}|${keyId}|${method}|${slot}`;
    const c = this.cells.get(k);
    if (c !== undefined) {
      c.quantity += quantity;
      c.events += 1;
      if (atMs > c.lastTimeMs) c.lastTimeMs = atMs;
      return;
    }
    if (this.cells.size + this.events.length >= this.maxCells) {
      this.dropped += 1;
      return;
    }
    this.cells.set(k, { tenantId, metric, keyId, method, slot, quantity, events: 1, lastTimeMs: atMs });
  }

  /** Adds an event that carries an idempotency id. */
  addEvent(event: Omit<MeterEvent, "cell">, metric: string, keyId: string, atMs: number, quantity: number): void {
    if (this.cells.size + this.events.length >= this.maxCells) {
      this.dropped += 1;
      return;
    }
    this.events.push({
      ...event,
      cell: {
        tenantId: event.tenantId,
        metric,
        keyId,
        method: "",
        slot: slotOf(atMs),
        quantity,
        events: 1,
        lastTimeMs: atMs,
      },
    });
  }

  /** Number of pending cells and events. */
  get size(): number {
    return this.cells.size + this.events.length;
  }

  /** Takes everything pending as one batch with a new id; null when nothing is pending. */
  take(): MeterBatch | null {
    if (this.cells.size === 0 && this.events.length === 0) return null;
    const batch: MeterBatch = {
      id: `${this.prefix}-${++this.seq}`,
      cells: [...this.cells.values()],
      events: this.events,
    };
    this.cells = new Map();
    this.events = [];
    return batch;
  }
}

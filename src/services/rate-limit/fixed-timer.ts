// One Node timer for many time bounds of the same length (the request ceiling, the bound on each
// rate-limiter or counter-store call): a per-call setTimeout, clearTimeout, a promise for the
// timeout and a Promise.race showed in the hot path's profile, and bounds of one length expire
// in the order they were set, so a linked list in that order needs only one timer.

/** One waiting operation in a FixedDelayTimer. */
export interface FixedDelayEntry {
  /** performance.now() at which it expires. */
  at: number;
  prev: FixedDelayEntry | null;
  next: FixedDelayEntry | null;
  /** Whether the entry is in the list. */
  queued: boolean;
  expire(): void;
}

/**
 * Deadlines of one fixed length, in the order they were set, under one Node timer. Entries that
 * end remove themselves (O(1)); the timer, armed for the earliest deadline, expires everything
 * due and re-arms for the next. It is unref'd: a running call keeps the process alive by its
 * socket, not by its time bound.
 */
export class FixedDelayTimer {
  private head: FixedDelayEntry | null = null;
  private tail: FixedDelayEntry | null = null;
  private timer: NodeJS.Timeout | undefined;
  /** When the armed timer fires (performance.now()), or +∞. */
  private armedFor = Number.POSITIVE_INFINITY;

  constructor(readonly ms: number) {}

  add(e: FixedDelayEntry): void {
    e.at = performance.now() + this.ms;
    e.prev = this.tail;
    e.next = null;
    e.queued = true;
    if (this.tail === null) this.head = e;
    else this.tail.next = e;
    this.tail = e;
    if (this.timer === undefined || this.armedFor > e.at) this.arm(e.at);
  }

  remove(e: FixedDelayEntry): void {
    if (!e.queued) return;
    e.queued = false;
    if (e.prev === null) this.head = e.next;
    else e.prev.next = e.next;
    if (e.next === null) this.tail = e.prev;
    else e.next.prev = e.prev;
    e.prev = null;
    e.next = null;
    // The timer stays armed: when it fires it finds the new head and re-arms for it, which costs
    // one timer per `ms` under steady load instead of one per call.
  }

  /** Calls waiting; for tests. */
  get size(): number {
    let n = 0;
    for (let e = this.head; e !== null; e = e.next) n++;
    return n;
  }

  private arm(at: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.armedFor = at;
    this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(at - performance.now())));
    this.timer.unref();
  }

  // An arrow field: made once per timer, not per call.
  private readonly fire = (): void => {
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    const now = performance.now();
    // Timers may fire a fraction of a millisecond early by this clock; 0.5 ms of slack keeps a
    // due call from waiting one more round.
    while (this.head !== null && this.head.at <= now + 0.5) {
      const e = this.head;
      this.remove(e);
      e.expire();
    }
    if (this.head !== null) this.arm(this.head.at);
  };
}

/**
 * `p`, or a rejection with `onTimeout()` if it has not settled after the timer's delay. The
 * bound only stops the wait: whatever `p` was doing goes on.
 */
export function withinDelay<T>(timer: FixedDelayTimer, p: Promise<T>, onTimeout: () => unknown): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const e: FixedDelayEntry = {
      at: 0,
      prev: null,
      next: null,
      queued: false,
      expire() {
        reject(onTimeout());
      },
    };
    timer.add(e);
    p.then(
      (v) => {
        timer.remove(e);
        resolve(v);
      },
      (err) => {
        timer.remove(e);
        reject(err);
      },
    );
  });
}

import { Code, ConnectError, createContextKey, type Interceptor, type UnaryRequest } from "@connectrpc/connect";
import {
  type FixedDelayEntry as CeilingEntry,
  FixedDelayTimer as CeilingTimer,
} from "../services/rate-limit/fixed-timer.js";

export { FixedDelayTimer as CeilingTimer } from "../services/rate-limit/fixed-timer.js";

// A server-side ceiling on how long a call may run. Connect already turns a client's deadline
// (grpc-timeout, connect-timeout-ms) into the handler's abort signal, but it has no ceiling of its
// own: its `maxTimeoutMs` option *rejects* clients asking for more instead of shortening their
// deadline, and a client that sends no deadline gets none. Here the effective deadline is the
// shorter of the two, and the call fails with DEADLINE_EXCEEDED when it passes even if the handler
// ignores its signal (the handler's work is abandoned, not killed: it must honour `ctx.signal` to
// stop early). When the call's own signal aborts first (the client's deadline, a reset, the
// server's shutdown), the call fails at once with that reason.
//
// Server-streaming and bidi calls are exempt: they are long-lived by design (health Watch,
// reflection) and end with the client, their own deadline, or the server's shutdown.
//
// Cost. This runs on every call, so it keeps per-call work small (profiled under h2load, the
// straightforward version — an AbortController, a timer, a promise and two abort listeners per
// call, and an abort event dispatched at the end of each — was about a tenth of a trivial call's
// CPU):
//   - every ceiling shares one timer: calls of one interceptor all get the same `maxMs`, so their
//     deadlines come in the order they started, and a linked list in that order (removal when a
//     call ends is O(1)) needs one timer, armed for its head;
//   - a transport that can tell the call's end without an AbortSignal (the gRPC fast path) puts a
//     CallLifetime in the context values: the interceptor then registers there, hands the
//     ceiling to it, and passes the request on untouched, so no signal exists unless a handler
//     reads `ctx.signal` (the fast path creates it then);
//   - otherwise (connect-node's path) it links a signal of its own to the call's, as before.

/**
 * The end of a call, offered by a transport that can report it without an AbortSignal. The
 * request's `signal` stays in step with it: it is aborted with the same reason.
 */
export interface CallLifetime {
  /** Why the call was aborted (client reset, client deadline, shutdown, end of call); undefined while it runs. */
  readonly abortReason: unknown;
  /** Aborts the call with `reason` (its signal too, if one was made); the first reason wins. */
  abort(reason: unknown): void;
  /** Calls `fn` once when the call is aborted, at once if it already was. One listener per call. */
  onAbort(fn: (reason: unknown) => void): void;
}

export const callLifetimeKey = createContextKey<CallLifetime | undefined>(undefined, {
  description: "tenantd call lifetime",
});

/** The reason a call that outlived the ceiling is aborted with. */
function ceilingError(maxMs: number): ConnectError {
  return new ConnectError(`the server's limit of ${maxMs} ms was exceeded`, Code.DeadlineExceeded);
}

/** One call under the ceiling, on a transport with a CallLifetime. */
class LifetimeCall implements CeilingEntry {
  at = 0;
  prev: CeilingEntry | null = null;
  next: CeilingEntry | null = null;
  queued = false;
  settled = false;

  constructor(
    private readonly lifetime: CallLifetime,
    private readonly timer: CeilingTimer,
    private readonly resolve: (v: unknown) => void,
    private readonly reject: (e: unknown) => void,
  ) {}

  expire(): void {
    // Aborting the lifetime reaches `aborted` below, which fails the call.
    this.lifetime.abort(ceilingError(this.timer.ms));
  }

  aborted(reason: unknown): void {
    this.timer.remove(this);
    if (this.settled) return;
    this.settled = true;
    this.reject(ConnectError.from(reason));
  }

  done(v: unknown): void {
    this.timer.remove(this);
    if (this.settled) return;
    this.settled = true;
    this.resolve(v);
  }

  failed(e: unknown): void {
    this.timer.remove(this);
    if (this.settled) return;
    this.settled = true;
    this.reject(e);
  }
}

/** One call under the ceiling on connect-node's path: a signal of its own, linked to the call's. */
class SignalCall implements CeilingEntry {
  at = 0;
  prev: CeilingEntry | null = null;
  next: CeilingEntry | null = null;
  queued = false;
  readonly controller = new AbortController();

  constructor(
    private readonly timer: CeilingTimer,
    private readonly reject: (e: unknown) => void,
  ) {}

  expire(): void {
    this.controller.abort(ceilingError(this.timer.ms));
  }

  /** Ours aborted (ceiling or parent): the call fails now, whatever the handler does. */
  selfAborted(): void {
    this.timer.remove(this);
    this.reject(ConnectError.from(this.controller.signal.reason));
  }
}

export function deadlineInterceptor(maxMs: number): Interceptor {
  if (!Number.isFinite(maxMs) || maxMs <= 0) throw new Error(`deadline must be a positive number of ms, got ${maxMs}`);
  const timer = new CeilingTimer(maxMs);
  return (next) => (req) => {
    const kind = req.method.methodKind;
    if (kind === "server_streaming" || kind === "bidi_streaming") return next(req);

    const lifetime = req.contextValues.get(callLifetimeKey);
    if (lifetime !== undefined) {
      return new Promise((resolve, reject) => {
        const call = new LifetimeCall(lifetime, timer, resolve as (v: unknown) => void, reject);
        if (lifetime.abortReason !== undefined) {
          call.aborted(lifetime.abortReason);
          return;
        }
        timer.add(call);
        // Inline arrows, not bound methods or arrow fields: tsx names every named function it
        // creates (esbuild keepNames), which costs a defineProperty per call.
        lifetime.onAbort((reason) => call.aborted(reason));
        next(req).then(
          (v) => call.done(v),
          (e) => call.failed(e),
        );
      }) as ReturnType<typeof next>;
    }

    return new Promise((resolve, reject) => {
      const call = new SignalCall(timer, reject);
      const own = call.controller.signal;
      own.addEventListener("abort", () => call.selfAborted(), { once: true });
      // The parent listener stays after the call: Connect aborts the call's signal when the call
      // is over, and handlers' cleanup hooked to their signal should see that too.
      const parent = req.signal;
      if (parent.aborted) call.controller.abort(parent.reason);
      else parent.addEventListener("abort", () => call.controller.abort(parent.reason), { once: true });
      if (own.aborted) return;
      timer.add(call);
      // Inner interceptors and the handler see the combined signal, so downstream I/O that takes
      // `ctx.signal` is cancelled at the effective deadline.
      const inner = { ...req, signal: own } as UnaryRequest;
      (next(inner as never) as Promise<unknown>).then(
        (v) => {
          timer.remove(call);
          resolve(v as never);
        },
        (e) => {
          timer.remove(call);
          reject(e);
        },
      );
    }) as ReturnType<typeof next>;
  };
}

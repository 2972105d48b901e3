import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

// A server-side ceiling on how long a call may run. Connect already turns a client's deadline
// (grpc-timeout, connect-timeout-ms) into the handler's abort signal, but it has no ceiling of its
// own: its `maxTimeoutMs` option *rejects* clients asking for more instead of shortening their
// deadline, and a client that sends no deadline gets none. Here the effective deadline is the
// shorter of the two, and the call fails with DEADLINE_EXCEEDED when it passes even if the handler
// ignores its signal (the handler's work is abandoned, not killed: it must honour `ctx.signal` to
// stop early).
//
// Server-streaming and bidi calls are exempt: they are long-lived by design (health Watch,
// reflection) and end with the client, their own deadline, or the server's shutdown.

export function deadlineInterceptor(maxMs: number): Interceptor {
  if (!Number.isFinite(maxMs) || maxMs <= 0) throw new Error(`deadline must be a positive number of ms, got ${maxMs}`);
  return (next) => async (req) => {
    const kind = req.method.methodKind;
    if (kind === "server_streaming" || kind === "bidi_streaming") return next(req);

    const controller = new AbortController();
    const parent = req.signal;
    const onParentAbort = () => controller.abort(parent.reason);
    if (parent.aborted) controller.abort(parent.reason);
    else parent.addEventListener("abort", onParentAbort, { once: true });
    const timer = setTimeout(
      () => controller.abort(new ConnectError(`the server's limit of ${maxMs} ms was exceeded`, Code.DeadlineExceeded)),
      maxMs,
    );
    const aborted = new Promise<never>((_, reject) => {
      const rejectWithReason = () => reject(ConnectError.from(controller.signal.reason));
      if (controller.signal.aborted) rejectWithReason();
      else controller.signal.addEventListener("abort", rejectWithReason, { once: true });
    });
    try {
      // Inner interceptors and the handler see the combined signal, so downstream I/O that takes
      // `ctx.signal` is cancelled at the effective deadline.
      return await Promise.race([next({ ...req, signal: controller.signal }), aborted]);
    } finally {
      // The parent listener stays: Connect aborts the call's signal when the call is over, and
      // handlers' cleanup hooked to their signal should see that too.
      clearTimeout(timer);
    }
  };
}

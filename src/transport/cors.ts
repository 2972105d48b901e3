// CORS for every protocol on the port (Connect, gRPC-Web, REST, /openapi.json), at the HTTP layer
// so that one policy applies before any protocol handler runs.
//
// API:
//   const cors = createCors({ origins: ["https://app.example.com"] });
//   if (cors(req, res)) return;   // a preflight was answered; otherwise headers are set, go on
//
// Behaviour:
// - no origins configured: the handler does nothing (no CORS headers; preflights reach the
//   routes as before and get their 404/405);
// - a request without `Origin` is not a cross-origin browser request: untouched;
// - allowed origin: an actual request gets Access-Control-Allow-Origin (the origin itself, or `*`
//   when the list is `*`) and Access-Control-Expose-Headers; a preflight (OPTIONS with
//   Access-Control-Request-Method) is answered 204 with the allowed methods, headers and max age;
// - other origins: no CORS headers, so the browser withholds the response from the page; their
//   preflight is answered 403 (the browser then never sends the actual request, and the refusal is
//   visible in the browser's network panel and in the request log).
// `Vary: Origin` is set on every response that carries an Origin, since the answer depends on it.
// Access-Control-Allow-Credentials is never sent: tenantd authenticates with a bearer key in a
// header, never with cookies, so browsers must not attach cookies or TLS client certificates.
import { cors as connectCors } from "@connectrpc/connect";
import type { NodeRequest, NodeResponse } from "./server.js";

export interface CorsOptions {
  /** Exact origins (`https://app.example.com`, `http://localhost:3000`), or `["*"]` for any. */
  origins: readonly string[];
  /** How long a browser may cache a preflight, in seconds; default 7200 (Chromium's ceiling). */
  maxAgeSeconds?: number;
}

export type CorsHandler = (req: NodeRequest, res: NodeResponse) => boolean;

/** Request headers a browser client of tenantd sends, besides the protocols' own. */
const APP_REQUEST_HEADERS = ["authorization", "x-tenant-id", "x-request-id"];
/** Methods the REST face uses, besides Connect's POST and GET. */
const REST_METHODS = ["PUT", "PATCH", "DELETE"];
/** Response headers a page may read: the protocols' status headers and tenantd's own. */
const APP_EXPOSED_HEADERS = [
  "x-request-id",
  "retry-after",
  "ratelimit",
  "ratelimit-policy",
  "ratelimit-limit",
  "ratelimit-remaining",
  "ratelimit-reset",
];

export const CORS_ALLOWED_METHODS = unique([...connectCors.allowedMethods, ...REST_METHODS]);
export const CORS_ALLOWED_HEADERS = unique([...connectCors.allowedHeaders, ...APP_REQUEST_HEADERS]);
export const CORS_EXPOSED_HEADERS = unique([...connectCors.exposedHeaders, ...APP_EXPOSED_HEADERS]);

export function createCors(opts: CorsOptions): CorsHandler {
  const any = opts.origins.includes("*");
  const allowed = new Set(opts.origins);
  const maxAge = String(opts.maxAgeSeconds ?? 7200);
  const methods = CORS_ALLOWED_METHODS.join(", ");
  const headers = CORS_ALLOWED_HEADERS.join(", ");
  const exposed = CORS_EXPOSED_HEADERS.join(", ");
  if (opts.origins.length === 0) return () => false;

  return (req, res) => {
    const origin = req.headers.origin;
    if (typeof origin !== "string" || origin === "") return false;
    const ok = any || allowed.has(origin);
    res.setHeader("vary", appendVary(res.getHeader("vary"), "origin"));
    const preflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
    if (!ok) {
      if (!preflight) return false;
      res.writeHead(403, { "content-length": "0" });
      res.end();
      return true;
    }
    res.setHeader("access-control-allow-origin", any ? "*" : origin);
    if (!preflight) {
      res.setHeader("access-control-expose-headers", exposed);
      return false;
    }
    res.writeHead(204, {
      "access-control-allow-methods": methods,
      "access-control-allow-headers": headers,
      "access-control-max-age": maxAge,
    });
    res.end();
    return true;
  };
}

function appendVary(current: ReturnType<NodeResponse["getHeader"]>, name: string): string {
  const list =
    current === undefined
      ? []
      : String(current)
          .split(",")
          .map((s) => s.trim());
  if (!list.some((v) => v.toLowerCase() === name)) list.push(name);
  return list.filter(Boolean).join(", ");
}

function unique(xs: string[]): string[] {
  return [...new Set(xs.map((x) => x.toLowerCase()))];
}

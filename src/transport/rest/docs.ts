// Serves the OpenAPI document (`GET /openapi.json`) and a browsable reference (`GET /docs`, Swagger
// UI from the swagger-ui-dist package, assets under `/docs/…`), offline: nothing is loaded from
// another host, and the page's Content-Security-Policy says so to the browser as well.
//
// API:
//   const docs = createDocsHandler({ document: () => buildOpenApi(...), title: "tenantd API" });
//   if (docs(req, res)) return;   // in the server's fallback, before the REST routes
//
// Files are served from a fixed map of URL path → file: a request path is only ever compared
// with the map's keys, never joined onto a folder, so no path (`/docs/../package.json`,
// `%2e%2e`, backslashes) can reach any other file. Every body is read and hashed once, then
// answered from memory with an ETag (304 on If-None-Match); the large bundle is also kept gzipped.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import type { NodeRequest, NodeResponse } from "./handler.js";

export interface DocsOptions {
  /** The OpenAPI document; called once, on the first request for it (or at once by `warm`). */
  document: () => unknown;
  /** The page title. */
  title: string;
  /** Where the document is served; default `/openapi.json`. */
  specPath?: string;
  /** Where the page is served; assets live under it. Default `/docs`. */
  docsPath?: string;
}

export type DocsHandler = ((req: NodeRequest, res: NodeResponse) => boolean) & {
  /** Builds the document now, so that a generator error stops start-up instead of a request. */
  warm(): void;
};

interface Asset {
  body: Buffer;
  gzip: Buffer | undefined;
  type: string;
  etag: string;
  cache: string;
}

// The package's files are named without a content hash, so an upgrade changes a file under the
// same URL: browsers may keep one for an hour, then revalidate by ETag.
const ASSET_CACHE = "public, max-age=3600";
// The page, its initializer and the document change with a deployment: always revalidated.
const FRESH = "no-cache";
// Swagger UI styles elements inline and draws icons from data: URIs; everything else is 'self'.
const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function createDocsHandler(opts: DocsOptions): DocsHandler {
  const specPath = opts.specPath ?? "/openapi.json";
  const docsPath = opts.docsPath ?? "/docs";
  const uiDir = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));

  // URL path → how to produce the asset; produced on first request and kept.
  const sources = new Map<string, () => Asset>([
    [specPath, () => asset(Buffer.from(JSON.stringify(opts.document())), "application/json; charset=utf-8", FRESH)],
    [docsPath, () => asset(Buffer.from(pageHtml(opts.title, docsPath)), "text/html; charset=utf-8", FRESH)],
    [`${docsPath}/`, () => asset(Buffer.from(pageHtml(opts.title, docsPath)), "text/html; charset=utf-8", FRESH)],
    [`${docsPath}/init.js`, () => asset(Buffer.from(initializerJs(specPath)), "text/javascript; charset=utf-8", FRESH)],
    ...(
      [
        ["swagger-ui.css", "text/css; charset=utf-8"],
        ["index.css", "text/css; charset=utf-8"],
        ["swagger-ui-bundle.js", "text/javascript; charset=utf-8"],
        ["favicon-32x32.png", "image/png"],
        ["favicon-16x16.png", "image/png"],
      ] as const
    ).map(([file, type]): [string, () => Asset] => [
      `${docsPath}/${file}`,
      () => asset(readFileSync(join(uiDir, file)), type, ASSET_CACHE),
    ]),
  ]);
  const cache = new Map<string, Asset>();
  const get = (path: string): Asset | undefined => {
    let a = cache.get(path);
    if (!a) {
      const make = sources.get(path);
      if (!make) return undefined;
      a = make();
      cache.set(path, a);
    }
    return a;
  };

  const handle = (req: NodeRequest, res: NodeResponse): boolean => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const isOurs = path === specPath || path === docsPath || path.startsWith(`${docsPath}/`);
    if (!isOurs) return false;
    const a = sources.has(path) ? get(path) : undefined;
    if (!a) {
      // Anything else under /docs/ (including every traversal attempt) is simply not one of ours.
      sendText(res, 404, "not found\n");
      return true;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      sendText(res, 405, "method not allowed\n");
      return true;
    }
    const headers: Record<string, string> = {
      "content-type": a.type,
      "cache-control": a.cache,
      etag: a.etag,
      "x-content-type-options": "nosniff",
      vary: "accept-encoding",
    };
    if (a.type.startsWith("text/html")) headers["content-security-policy"] = PAGE_CSP;
    const out = res as unknown as {
      writeHead(s: number, h: Record<string, string>): unknown;
      end(b?: Buffer): unknown;
    };
    if (ifNoneMatch(req, a.etag)) {
      out.writeHead(304, headers);
      out.end();
      return true;
    }
    const useGzip = a.gzip !== undefined && /\bgzip\b/i.test(String(req.headers["accept-encoding"] ?? ""));
    const body = useGzip ? (a.gzip as Buffer) : a.body;
    if (useGzip) headers["content-encoding"] = "gzip";
    headers["content-length"] = String(body.length);
    out.writeHead(200, headers);
    out.end(req.method === "HEAD" ? undefined : body);
    return true;
  };

  return Object.assign(handle, {
    warm: () => {
      get(specPath);
    },
  });
}

function asset(body: Buffer, type: string, cache: string): Asset {
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`;
  // Only text worth compressing; small bodies are not.
  const gzip = body.length > 1024 && !type.startsWith("image/") ? gzipSync(body) : undefined;
  return { body, gzip, type, etag, cache };
}

function ifNoneMatch(req: NodeRequest, etag: string): boolean {
  const v = req.headers["if-none-match"];
  if (v === undefined) return false;
  return String(v)
    .split(",")
    .some((t) => {
      const x = t.trim();
      return x === "*" || x === etag || x === `W/${etag}`;
    });
}

function sendText(res: NodeResponse, status: number, text: string): void {
  const out = res as unknown as { writeHead(s: number, h: Record<string, string>): unknown; end(b: string): unknown };
  out.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": String(Buffer.byteLength(text)),
    "x-content-type-options": "nosniff",
  });
  out.end(text);
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Asset URLs are absolute paths so that `/docs` and `/docs/` load the same files.
function pageHtml(title: string, docsPath: string): string {
  const t = escapeHtml(title);
  const p = escapeHtml(docsPath);
  return `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>${t}</title>
    <link rel="stylesheet" href="${p}/swagger-ui.css">
    <link rel="stylesheet" href="${p}/index.css">
    <link rel="icon" type="image/png" href="${p}/favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="${p}/favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="${p}/swagger-ui-bundle.js"></script>
    <script src="${p}/init.js"></script>
  </body>
</html>
`;
}

// An external file rather than an inline script, so that the page's CSP can forbid inline scripts.
// validatorUrl null: Swagger UI would otherwise send the document to a public validator service.
function initializerJs(specPath: string): string {
  return `window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: ${JSON.stringify(specPath)},
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
`;
}

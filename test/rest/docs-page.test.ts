// GET /docs: the API reference page (Swagger UI from the swagger-ui-dist package) is served from
// this process only: the HTML names no other host, every asset it references is served with its
// content type, and nothing outside the fixed asset map is reachable (traversal attempts are sent
// raw with node:http, since fetch would normalise `..` away before sending).
import * as http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../helpers/app.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(() => h?.close());

/** Sends `path` exactly as given. */
function raw(
  path: string,
  method = "GET",
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: h.port, path, method }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

const TYPES: Record<string, RegExp> = {
  ".js": /^text\/javascript/,
  ".css": /^text\/css/,
  ".png": /^image\/png$/,
};

describe("GET /docs", () => {
  let html = "";

  it("serves an HTML page that loads nothing from another host", async () => {
    const r = await raw("/docs");
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toMatch(/^text\/html/);
    expect(r.headers["x-content-type-options"]).toBe("nosniff");
    // The browser enforces it too: scripts, styles and fetches from this origin only.
    expect(r.headers["content-security-policy"]).toMatch(/default-src 'none'/);
    expect(r.headers["content-security-policy"]).toMatch(/script-src 'self'(;|$)/);
    html = r.body;
    expect(html).not.toMatch(/https?:\/\//i);
    expect(html).not.toMatch(/src=["']\/\//); // protocol-relative URLs
    expect((await raw("/docs/")).body).toBe(html);
  });

  it("serves every asset the page references, with its content type and cache headers", async () => {
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1] as string);
    expect(refs.length).toBeGreaterThanOrEqual(4);
    for (const ref of refs) {
      expect(ref.startsWith("/docs/"), ref).toBe(true);
      const r = await fetch(h.baseUrl + ref);
      expect(r.status, ref).toBe(200);
      const ext = ref.slice(ref.lastIndexOf("."));
      expect(r.headers.get("content-type"), ref).toMatch(TYPES[ext] as RegExp);
      expect(r.headers.get("cache-control"), ref).toMatch(/max-age|no-cache/);
      expect(r.headers.get("etag"), ref).toBeTruthy();
      expect((await r.arrayBuffer()).byteLength, ref).toBeGreaterThan(0);
    }
  });

  it("points the UI at /openapi.json and at no outside validator", async () => {
    const init = await fetch(`${h.baseUrl}/docs/init.js`);
    const text = await init.text();
    expect(text).toContain('"/openapi.json"');
    expect(text).toMatch(/validatorUrl: null/);
    expect(text).not.toMatch(/https?:\/\//);
  });

  it("compresses the bundle for clients that accept gzip and answers 304 to a matching ETag", async () => {
    const r = await fetch(`${h.baseUrl}/docs/swagger-ui-bundle.js`, { headers: { "accept-encoding": "gzip" } });
    expect(r.headers.get("content-encoding")).toBe("gzip");
    expect((await r.text()).length).toBeGreaterThan(100_000); // fetch decompresses
    const etag = r.headers.get("etag") as string;
    const again = await fetch(`${h.baseUrl}/docs/swagger-ui-bundle.js`, { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
  });

  it.each([
    "/docs/../package.json",
    "/docs/%2e%2e/package.json",
    "/docs/%2E%2E%2Fpackage.json",
    "/docs/..%2fpackage.json",
    "/docs/..%5cpackage.json",
    "/docs/..\\package.json",
    "/docs/./swagger-ui.css/../../package.json",
    "/docs//etc/passwd",
    "/docs/%2fetc%2fpasswd",
    "/docs/swagger-ui-bundle.js.map",
    "/docs/package.json",
    "/docs/index.html",
    "/docs/swagger-ui.css%00.png",
  ])("refuses %s", async (path) => {
    const r = await raw(path);
    expect(r.status).toBe(404);
    expect(r.body).not.toContain('"name"');
    expect(r.body).not.toContain("root:");
  });

  it("answers 405 to methods other than GET and HEAD", async () => {
    const r = await raw("/docs", "POST");
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe("GET, HEAD");
    const head = await raw("/docs/swagger-ui.css", "HEAD");
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
    expect(Number(head.headers["content-length"])).toBeGreaterThan(0);
  });
});

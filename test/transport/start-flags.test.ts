// The Node flags the server runs with are one decision (README, "Node flags"): `npm start`, the
// Docker image and the bench's child servers all use the same ones, and this Node accepts them.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SERVER_NODE_FLAGS } from "../../bench/h2load.js";

const root = join(import.meta.dirname, "..", "..");

describe("server Node flags", () => {
  it("npm start, the Dockerfile and the bench's child servers use the same flags", () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> };
    expect(pkg.scripts.start).toBe(`node ${SERVER_NODE_FLAGS.join(" ")} --import tsx src/main.ts`);
    const cmd = /^CMD (.*)$/m.exec(readFileSync(join(root, "Dockerfile"), "utf8"))?.[1];
    expect(JSON.parse(cmd ?? "null")).toEqual(["node", ...SERVER_NODE_FLAGS, "--import", "tsx", "src/main.ts"]);
    const readme = readFileSync(join(root, "README.md"), "utf8");
    for (const flag of SERVER_NODE_FLAGS) expect(readme).toContain(flag);
  });

  it("this Node accepts them (an unknown or malformed V8 flag stops node with an error)", async () => {
    const probe = spawn(
      process.execPath,
      [...SERVER_NODE_FLAGS, "-e", 'process.stdout.write(String(require("node:v8").getHeapSpaceStatistics().length))'],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    let err = "";
    probe.stdout.on("data", (b: Buffer) => {
      out += b.toString();
    });
    probe.stderr.on("data", (b: Buffer) => {
      err += b.toString();
    });
    const code = await new Promise<number | null>((resolve) => probe.once("exit", resolve));
    expect(err).toBe("");
    expect(code).toBe(0);
    expect(Number(out)).toBeGreaterThan(0);
  });
});

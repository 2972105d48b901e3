import { defineConfig } from "vitest/config";

// Forks rather than threads: PGlite's WASM heap and pg's sockets are per process, and a test file
// that crashes must not take the others down. Timeouts leave room for PGlite's start-up and for
// the concurrency tests that serialise on its single connection.
export default defineConfig({
  test: {
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});

import type { Knex } from "knex";

/** Rows of a raw query; pg and knex-pglite both answer raw queries with `{ rows }`. */
export async function rowsOf<T>(q: Knex.Raw): Promise<T[]> {
  const res = (await q) as { rows: T[] };
  return res.rows;
}

/** The first row of a raw query, or null. */
export async function firstOf<T>(q: Knex.Raw): Promise<T | null> {
  const rows = await rowsOf<T>(q);
  return rows[0] ?? null;
}

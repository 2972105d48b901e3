import type { Knex } from "knex";
import type { SettingsStore } from "../ports.js";
import { firstOf } from "./sql.js";

export function createSettingsStore(knex: Knex): SettingsStore {
  const read = (name: string) =>
    firstOf<{ value: string }>(knex.raw("select value from tenantd.settings where name = ?", [name]));

  return {
    async getOrCreate(name: string, make: () => string): Promise<string> {
      const existing = await read(name);
      if (existing) return existing.value;
      // Concurrent first calls: one insert wins; the others wait for it to commit, insert
      // nothing, and their next statement (a new snapshot) reads the winner's value.
      const inserted = await firstOf<{ value: string }>(
        knex.raw(
          "insert into tenantd.settings (name, value) values (?, ?) on conflict (name) do nothing returning value",
          [name, make()],
        ),
      );
      if (inserted) return inserted.value;
      const winner = await read(name);
      if (!winner) throw new Error(`setting ${name} vanished while being created`);
      return winner.value;
    },
  };
}

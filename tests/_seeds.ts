/**
 * Seeds for simulation tests: a range, or the one in `SIM_SEED` to replay a
 * failure.
 *
 * @module
 */

/**
 * The seeds of a run: `count` seeds from `offset`, or only `SIM_SEED` when set.
 *
 * @param count how many
 * @param offset the first
 * @returns the seeds
 */
export function seeds(count: number, offset: number): number[] {
  const fixed = Deno.env.get("SIM_SEED");
  if (fixed !== undefined) return [Number(fixed)];
  return Array.from({ length: count }, (_, i) => offset + i);
}

/**
 * Runs `check` for each seed; a failure names its seed and how to replay it.
 *
 * @param file the test file, for the replay line
 * @param count how many seeds
 * @param offset the first seed
 * @param check the run and its assertions
 */
export function forSeeds(
  file: string,
  count: number,
  offset: number,
  check: (seed: number) => void,
): void {
  for (const seed of seeds(count, offset)) {
    try {
      check(seed);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(
        `seed ${seed} failed (replay: SIM_SEED=${seed} deno test --allow-all ${file}): ${message}`,
        { cause: error },
      );
    }
  }
}

/**
 * Formats a duration for people: `45 s`, `3 min 5 s`, `2 h 10 min`,
 * `3 d 4 h`; negative durations count as 0.
 *
 * @param ms milliseconds
 * @returns the text
 *
 * @example
 * ```ts
 * durationText(185_000); // "3 min 5 s"
 * ```
 */
export function durationText(ms: number): string {
  const total = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(total / 86_400);
  const h = Math.floor((total % 86_400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s} s`;
  return `${s} s`;
}

/**
 * Formats bytes as lowercase hex.
 *
 * @param bytes any bytes
 * @returns two hex digits per byte
 *
 * @example
 * ```ts
 * toHex(Uint8Array.of(1, 255)); // "01ff"
 * ```
 */
export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}

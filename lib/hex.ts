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
  for (const byte of bytes) out += HEX_OF_BYTE[byte];
  return out;
}

/** Two lowercase hex digits of each byte value, by value. */
export const HEX_OF_BYTE: readonly string[] = Array.from(
  { length: 256 },
  (_, b) => b.toString(16).padStart(2, "0"),
);

/**
 * Parses lowercase or uppercase hex into bytes.
 *
 * @param hex an even number of hex digits
 * @returns the bytes
 * @throws {RangeError} if `hex` is not whole bytes of hex digits
 *
 * @example
 * ```ts
 * fromHex("01ff"); // Uint8Array [1, 255]
 * ```
 */
export function fromHex(hex: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) throw new RangeError(`Cannot parse "${hex}" as hex`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

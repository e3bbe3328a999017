/**
 * Short-lived small byte arrays carved from shared slabs.
 *
 * A `new Uint8Array(n)` gets its own backing store, which V8 allocates and
 * later frees outside its heap: about 1.5 µs each, more than the rest of
 * encoding a datagram. A view on a shared slab costs a few dozen
 * nanoseconds. A view keeps its whole slab alive, so the pool is for arrays
 * that are dropped soon after use, such as an encoded datagram on its way to
 * the socket; keep nothing from it for long.
 *
 * @module
 */

/** Size of one slab, bytes. */
const SLAB_BYTES = 64 * 1024;
/** Larger arrays get their own buffer. */
const MAX_POOLED_BYTES = 4096;

let slab = new ArrayBuffer(SLAB_BYTES);
let used = 0;

/**
 * Returns a zero-filled array of `size` bytes, a view on a shared slab when
 * it is small.
 *
 * @param size the length, bytes
 * @returns a fresh array that no other caller sees
 *
 * @example
 * ```ts
 * const datagram = allocateBytes(1122);
 * ```
 */
export function allocateBytes(size: number): Uint8Array {
  if (size > MAX_POOLED_BYTES) return new Uint8Array(size);
  if (used + size > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    used = 0;
  }
  const out = new Uint8Array(slab, used, size);
  // Aligned to 8 bytes, as a DataView over it prefers.
  used += (size + 7) & ~7;
  return out;
}

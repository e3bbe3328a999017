/**
 * ChaCha20-Poly1305 (RFC 8439, the IETF variant) from libsodium
 * (`crypto_aead_chacha20poly1305_ietf_*_detached`), in the WebAssembly build
 * of the npm package `libsodium`, called directly: key, nonce, data and
 * message are copied into one scratch area of its heap, sealed or opened in
 * place, and copied out. No object is made per message, which is what makes
 * it cheaper than `node:crypto` for datagram-sized messages (2.3 against 4.5
 * us for 1,100 bytes here), though slower per byte (about 600 MB/s against
 * 1.3 GB/s). {@link chacha20_poly1305.ts} picks by size; see DECISIONS, "The
 * AEAD for small messages: libsodium's WebAssembly".
 *
 * Synchronous: the module is instantiated once, when this file is first
 * imported (a few milliseconds).
 *
 * @module
 */
import libsodium from "libsodium";

/** Bytes of a key, a nonce and a tag. */
const KEY = 32, NONCE = 12, TAG = 16;

/** What this file uses of the Emscripten module: pointers are heap offsets, 64-bit lengths two 32-bit halves. */
interface Sodium {
  ready: Promise<unknown>;
  HEAPU8: Uint8Array;
  _sodium_init(): number;
  _malloc(bytes: number): number;
  _free(pointer: number): void;
  _crypto_aead_chacha20poly1305_ietf_encrypt_detached(
    c: number,
    mac: number,
    macLength: number,
    m: number,
    mLength: number,
    mLengthHigh: number,
    ad: number,
    adLength: number,
    adLengthHigh: number,
    nsec: number,
    nonce: number,
    key: number,
  ): number;
  _crypto_aead_chacha20poly1305_ietf_decrypt_detached(
    m: number,
    nsec: number,
    c: number,
    cLength: number,
    cLengthHigh: number,
    mac: number,
    ad: number,
    adLength: number,
    adLengthHigh: number,
    nonce: number,
    key: number,
  ): number;
}

const sodium = libsodium as unknown as Sodium;
await sodium.ready;
if (sodium._sodium_init() < 0) throw new Error("libsodium could not start");

function allocate(bytes: number): number {
  const pointer = sodium._malloc(bytes);
  if (pointer === 0) throw new RangeError(`libsodium has no room for ${bytes} bytes`);
  return pointer;
}

/**
 * The scratch area: key and nonce at fixed places, then the associated data
 * and the message with its tag right after it, in areas that grow to the
 * largest seen. JavaScript runs one call at a time and each finishes before
 * the next, so one area serves them all.
 */
const scratch = {
  key: allocate(KEY + NONCE),
  get nonce(): number {
    return this.key + KEY;
  },
  ad: 0,
  adRoom: 0,
  message: 0,
  messageRoom: 0,
};

/** A view of the heap on the message area, kept while the heap, the area and the length stay. */
interface HeapView {
  heap: Uint8Array;
  at: number;
  view: Uint8Array;
}

/**
 * The views the last seal and the last open copied out of: datagrams of a
 * transfer have one size, so one view serves most calls (a view is an
 * object; a datagram made two or three).
 */
const views = {
  sealed: { heap: new Uint8Array(0), at: 0, view: new Uint8Array(0) } as HeapView,
  opened: { heap: new Uint8Array(0), at: 0, view: new Uint8Array(0) } as HeapView,
};

/** The first `length` bytes of the message area, through the view kept under `slot`. */
function messageBytes(slot: keyof typeof views, heap: Uint8Array, length: number): Uint8Array {
  const last = views[slot];
  if (last.heap === heap && last.at === scratch.message && last.view.length === length) {
    return last.view;
  }
  const view = heap.subarray(scratch.message, scratch.message + length);
  views[slot] = { heap, at: scratch.message, view };
  return view;
}

/**
 * Writes key, nonce and data into the scratch area, with room for a message.
 *
 * @returns the heap (read after any allocation: growing the heap replaces the array)
 */
function load(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, length: number): Uint8Array {
  if (length + TAG > scratch.messageRoom) {
    if (scratch.message !== 0) sodium._free(scratch.message);
    scratch.messageRoom = Math.max(length + TAG, 4096);
    scratch.message = allocate(scratch.messageRoom);
  }
  if (ad.length > scratch.adRoom) {
    if (scratch.ad !== 0) sodium._free(scratch.ad);
    scratch.adRoom = Math.max(ad.length, 64);
    scratch.ad = allocate(scratch.adRoom);
  }
  const heap = sodium.HEAPU8;
  heap.set(key, scratch.key);
  heap.set(nonce, scratch.nonce);
  heap.set(ad, scratch.ad);
  return heap;
}

/**
 * Seals `plaintext` into `out` at `offset`: ciphertext, then the 16-byte tag.
 * The caller has checked the lengths (32-byte key, 12-byte nonce, room in `out`).
 */
export function sodiumSealInto(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  plaintext: Uint8Array,
  out: Uint8Array,
  offset: number,
): void {
  const length = plaintext.length;
  const heap = load(key, nonce, ad, length);
  heap.set(plaintext, scratch.message);
  sodium._crypto_aead_chacha20poly1305_ietf_encrypt_detached(
    scratch.message,
    scratch.message + length,
    0,
    scratch.message,
    length,
    0,
    scratch.ad,
    ad.length,
    0,
    0,
    scratch.nonce,
    scratch.key,
  );
  heap.fill(0, scratch.key, scratch.key + KEY);
  out.set(messageBytes("sealed", heap, length + TAG), offset);
}

/**
 * Opens ciphertext and tag into `out` (at least `sealed.length - 16` bytes).
 * The caller has checked that `sealed` holds a tag.
 *
 * @returns false, with `out` untouched, if the tag does not match
 */
export function sodiumOpenInto(
  key: Uint8Array,
  nonce: Uint8Array,
  ad: Uint8Array,
  sealed: Uint8Array,
  out: Uint8Array,
): boolean {
  const length = sealed.length - TAG;
  const heap = load(key, nonce, ad, length);
  heap.set(sealed, scratch.message);
  const failed = sodium._crypto_aead_chacha20poly1305_ietf_decrypt_detached(
    scratch.message,
    0,
    scratch.message,
    length,
    0,
    scratch.message + length,
    scratch.ad,
    ad.length,
    0,
    scratch.nonce,
    scratch.key,
  );
  heap.fill(0, scratch.key, scratch.key + KEY);
  if (failed !== 0) return false;
  out.set(messageBytes("opened", heap, length));
  return true;
}

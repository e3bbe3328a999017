/**
 * The file format of a static X25519 key pair, shared by the server's
 * identity (`server_identity.json`) and the client's key (`client_key.json`):
 * JSON `{ version: 1, type: "x25519", privateKey, publicKey }` in hex, mode
 * 0600, the public key checked against the private one when read.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { fromHex, toHex } from "../hex.ts";
import { fingerprint } from "../crypto/fingerprint.ts";
import { type KeyPair, keyPairFromPrivateKey } from "../crypto/key_pair.ts";

/** A key pair loaded from its file, and what people call it. */
export interface StoredKeyPair {
  /** The X25519 key pair. */
  readonly keyPair: KeyPair;
  /** The public key's fingerprint (see `lib/crypto/fingerprint.ts`). */
  readonly fingerprint: string;
  /** Whether this start created it. */
  readonly created: boolean;
}

/**
 * @param keyPair the key pair
 * @param created whether this start made it
 * @returns it with its fingerprint
 */
export function storedKeyPair(keyPair: KeyPair, created: boolean): StoredKeyPair {
  return { keyPair, fingerprint: fingerprint(keyPair.publicKey), created };
}

/**
 * @param keyPair the key pair to write
 * @returns the file's text
 */
export function keyPairFileText(keyPair: KeyPair): string {
  const json = {
    version: 1,
    type: "x25519",
    privateKey: toHex(keyPair.privateKey),
    publicKey: toHex(keyPair.publicKey),
  };
  return JSON.stringify(json, null, 2) + "\n";
}

/**
 * @param text a key pair file's text
 * @returns the key pair, or undefined if the text is not a valid one
 */
export function parseKeyPairFile(text: string): KeyPair | undefined {
  try {
    const json = JSON.parse(text);
    if (
      json?.version !== 1 || json.type !== "x25519" ||
      !/^[0-9a-f]{64}$/.test(json.privateKey) || !/^[0-9a-f]{64}$/.test(json.publicKey)
    ) {
      return undefined;
    }
    const keyPair = keyPairFromPrivateKey(fromHex(json.privateKey));
    return toHex(keyPair.publicKey) === json.publicKey ? keyPair : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Restores mode 0600 if others can read the file, and says so in the log.
 *
 * @param path the key pair file
 * @param program whose log says it
 */
export async function keepPrivate(path: string, program: "client" | "server"): Promise<void> {
  if (Deno.build.os === "windows") return;
  const mode = (await Deno.stat(path)).mode;
  if (mode === null || (mode & 0o077) === 0) return;
  await Deno.chmod(path, 0o600);
  getLogger(["switchboard", program]).warn(
    "{path} was readable by others (mode {mode}); set it back to 0600",
    { path, mode: (mode & 0o777).toString(8) },
  );
}

/**
 * What the server driver (`server_driver.ts`) needs to start: addresses,
 * the data directory, the store, the mode, and every limit, as `server.ts`
 * makes it from its flags; and where the users file is (`usersPath`).
 *
 * @module
 */
import type { ServerLimits } from "../server/admission.ts";
import type { AuthMode } from "../server/accounts.ts";
import type { ServerEvent } from "../server/server_event.ts";
import type { StorageLimits } from "../server/stored_files.ts";
import type { ServerObserver } from "./metrics_observer.ts";

/** Everything the server driver needs to start. */
export interface ServerConfig {
  /** Address to bind both sockets to. */
  host: string;
  /** UDP port; 0 picks a free one. */
  udpPort: number;
  /** TCP port; 0 picks a free one. */
  tcpPort: number;
  /** Second UDP port, for address discovery; 0 picks a free one; absent: none. */
  udpPort2?: number;
  /** Where `registrations.json` lives. */
  dataDir: string;
  /** Where the registry is kept: the data directory (default) or `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`. */
  store?: string;
  /**
   * The host clients reach this instance's TCP port at, which a shared store
   * records with the files on its disk (default: `host`, or the machine's
   * host name when `host` is a wildcard).
   */
  advertise?: string;
  /** The version reported to clients. */
  version: string;
  /** Called for every event after it is logged (the console uses it). */
  onEvent?: (event: ServerEvent) => void;
  /** `open` (default) or `password`. */
  auth?: AuthMode;
  /** Password mode's users file (re-read when it changes). */
  usersFile?: string;
  /** Session lease, ms. */
  leaseMs?: number;
  /** Failed logins from one address that block it for a name. */
  maxAttempts?: number;
  /** How long the first block lasts, ms; later ones from the same address double. */
  lockoutMs?: number;
  /** Open mode: remove an identity not seen for this long, with its files, ms (0 or absent: never). */
  expireAfterMs?: number;
  /** Limits on stored files. */
  storage?: StorageLimits;
  /**
   * Limits that keep one address or a flood from taking the server over
   * (`registerRate` defaults to `DEFAULT_REGISTER_RATE`, 20, here).
   */
  limits?: ServerLimits;
  /** Told what comes in and goes out, every event and registry write (for `/metrics`). */
  observer?: ServerObserver;
}

/**
 * Where password mode's users file is.
 *
 * @param config the server's settings
 * @returns `usersFile`, or `users.json` in the data directory
 */
export function usersPath(config: ServerConfig): string {
  return config.usersFile ?? `${config.dataDir}/users.json`;
}

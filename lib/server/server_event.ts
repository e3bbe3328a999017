/**
 * The server core's vocabulary with its drivers: where a message came from
 * ({@linkcode Endpoint}), what happened ({@linkcode ServerEvent}, for the log
 * and the console; `server_event_text.ts` makes the words) and what the core
 * asks its driver to do ({@linkcode ServerOutput}).
 *
 * @module
 */
import type { ErrorCodeName } from "../wire/error_code.ts";
import type { Message } from "../wire/messages.ts";
import type { ConnectionLimitHit } from "./connection_limits.ts";
import type { RegistryChange, RegistryJson } from "./registry.ts";
import type { PeerNews } from "./peer_relay.ts";
import type { LoginOutcome, PresenceRecord } from "./store.ts";
import type { StoredFile } from "./stored_files.ts";

/** Where a message came from, and so where its reply goes. */
export interface Endpoint {
  /** The transport it arrived on. */
  readonly transport: "udp" | "tcp";
  /** The peer's IP address. */
  readonly address: string;
  /** The peer's port. */
  readonly port: number;
  /** For TCP: the driver's id of the connection. */
  readonly connId?: number;
  /** For UDP: true if it came to the second port (address discovery); replies leave from there. */
  readonly second?: true;
  /**
   * For UDP: true if it came in clear (a first-contact `hello`), so its reply
   * goes in clear too: sealing would add 32 bytes to a reply sized to the
   * datagram of a sender that proved nothing.
   */
  readonly clear?: true;
  /**
   * The static public key (X25519) of the encrypted channel the message came
   * through (absent in clear: `hello`): the client's identity in open mode. A
   * session remembers the key it logged in with; the server vouches for it
   * to peers in `lookup_ok`. The simulator, which runs the cores without the
   * secure layer, stands in with each client's key.
   */
  readonly clientKey?: Uint8Array;
}

/** Something that happened, for the log and the console. */
export type ServerEvent =
  | {
    readonly kind: "registered";
    readonly name: string;
    readonly reqId: number;
    /** Identifies the request (a hash of it); unique per executed request. */
    readonly fingerprint: string;
    readonly ip: string;
    readonly udpPort: number;
    readonly tcpPort: number;
    readonly transport: "udp" | "tcp";
  }
  | {
    readonly kind: "deregistered";
    readonly name: string;
    readonly reqId: number;
    /** Identifies the request (a hash of it); unique per executed request. */
    readonly fingerprint: string;
    readonly transport: "udp" | "tcp";
  }
  | {
    /** A version 2 identity logged in with its old key and is now bound to its client's key pair. */
    readonly kind: "identity_bound";
    readonly name: string;
    readonly reqId: number;
  }
  | {
    readonly kind: "logged_in";
    readonly name: string;
    readonly ip: string;
    readonly udpPort: number;
    readonly tcpPort: number;
    readonly transport: "udp" | "tcp";
    /** True if it replaced an older session of the same name. */
    readonly replaced: boolean;
    /** True if the session moved here from another instance (shared presence). */
    readonly moved?: boolean;
  }
  | {
    readonly kind: "logged_out";
    readonly name: string;
    /**
     * `exit` (logout), `lease` (no heartbeat in time), `deregister`; with
     * shared presence, `moved` (its client moved to another instance) or
     * `replaced` (a login on another instance took the name over).
     */
    readonly why: "exit" | "lease" | "deregister" | "shutdown" | "moved" | "replaced";
  }
  | {
    readonly kind: "active";
    /** Everyone online, on this instance and (shared presence) the others. */
    readonly names: readonly string[];
    /** With shared presence: how many of them are this instance's sessions. */
    readonly here?: number;
  }
  | {
    readonly kind: "file_stored";
    readonly user: string;
    readonly name: string;
    readonly size: number;
    readonly sha256: string;
  }
  | { readonly kind: "file_deleted"; readonly user: string; readonly name: string }
  | { readonly kind: "file_sent"; readonly user: string; readonly name: string; size: number }
  | {
    readonly kind: "text";
    readonly from: Endpoint;
    readonly reqId: number;
    readonly name: string;
    readonly verified: boolean;
    readonly text: string;
  }
  | {
    readonly kind: "refused";
    readonly from: Endpoint;
    readonly request: string;
    readonly reqId: number;
    readonly code: ErrorCodeName;
    readonly reason: string;
  }
  | {
    readonly kind: "replayed";
    readonly from: Endpoint;
    readonly request: string;
    readonly reqId: number;
  }
  | { readonly kind: "unexpected"; readonly from: Endpoint; readonly type: string }
  | { readonly kind: "save_failed"; readonly reason: string }
  /** An open-mode identity not seen for `expireAfterMs` was removed, with its files. */
  | {
    readonly kind: "expired";
    readonly name: string;
    /** When it was last seen (or registered), ISO 8601. */
    readonly lastSeen: string;
    /** How many stored files went with it. */
    readonly files: number;
  }
  /**
   * UDP datagrams (or TCP requests without a session) from one address were
   * dropped by a rate limit: at most one such event per address per report
   * period, counting the drops since the last.
   */
  | {
    readonly kind: "rate_limited";
    /** Where the drops came in: UDP datagrams, or TCP requests (refused with `busy`). */
    readonly transport: "udp" | "tcp";
    readonly address: string;
    readonly dropped: number;
    /** True for the loose limit on datagrams with a live session token. */
    readonly session: boolean;
    readonly ratePerSecond: number;
    readonly burst: number;
  }
  /** TCP connections from one address were refused (at most one event per report period). */
  | {
    readonly kind: "connection_refused";
    readonly address: string;
    readonly refused: number;
    readonly hit: ConnectionLimitHit;
  }
  /**
   * Unauthenticated TCP connections from an address were closed to make
   * room for newer ones (reported at most once per period per address).
   */
  | {
    readonly kind: "connection_made_room";
    readonly address: string;
    readonly closed: number;
    readonly hit: ConnectionLimitHit;
  }
  /** A client asked to be introduced to a peer for a session (`introduce`); the peer was told. */
  | {
    readonly kind: "introduced";
    readonly session: string;
    readonly from: string;
    readonly to: string;
    /** How many host candidates the asker gave. */
    readonly hosts: number;
  }
  /** The first datagram of a session went through the relay. */
  | {
    readonly kind: "relay_started";
    readonly session: string;
    readonly a: string;
    readonly b: string;
  }
  /** The relay dropped datagrams of a session for its rate limit or quota (at most one event per period). */
  | {
    readonly kind: "relay_limited";
    readonly session: string;
    /** The sender whose datagram was dropped. */
    readonly name: string;
    readonly why: "rate" | "quota";
    /** Datagrams dropped since the last such event. */
    readonly dropped: number;
    /** Bytes relayed for the session so far. */
    readonly bytes: number;
  }
  /** A relayed session's introduction was forgotten (idle, or room was made): what it carried. */
  | {
    readonly kind: "relay_ended";
    readonly session: string;
    readonly a: string;
    readonly b: string;
    readonly bytes: number;
    readonly datagrams: number;
  }
  /** A TCP connection was closed for being idle or sending a frame too slowly. */
  | {
    readonly kind: "connection_closed";
    readonly connId: number;
    readonly address: string;
    readonly port: number;
    readonly hit: ConnectionLimitHit;
  };

/** What the core asks its driver to do. */
export type ServerOutput =
  | { readonly type: "send"; readonly to: Endpoint; readonly message: Message }
  /**
   * Make the registry durable as `version`, then call `persisted` (or
   * `persistFailed`): a file store writes the snapshot (read it when
   * polled: it is made on reading), a shared store applies the changes
   * made since the previous `persist`.
   */
  | {
    readonly type: "persist";
    readonly version: number;
    readonly registry: RegistryJson;
    readonly changes: readonly RegistryChange[];
  }
  | { readonly type: "event"; readonly event: ServerEvent }
  /**
   * Record in the shared store a login that failed or succeeded here, and
   * tell the other instances; with an `id`, report `loginRecorded(id)` when
   * done (or failed): the refusal waits for it.
   */
  | { readonly type: "login_store"; readonly outcome: LoginOutcome; readonly id?: number }
  /** Send an introduction or relayed datagram to the instance holding its party (shared presence only). */
  | { readonly type: "peer_store"; readonly news: PeerNews }
  /** Tell the other instances of a session of this one (shared presence only). */
  | {
    readonly type: "presence_store";
    readonly op: "join" | "renew" | "leave";
    readonly record: PresenceRecord;
    /** When its lease runs out unless renewed, ms since the epoch. */
    readonly deadline: number;
  }
  /** Check a password against a hash, then call `passwordChecked(now, id, ok)`. */
  | {
    readonly type: "verify_password";
    readonly id: number;
    readonly hash: string;
    readonly password: string;
  }
  /** Start storing a file; chunks follow, then `upload_commit` or `upload_abort`. */
  | {
    readonly type: "upload_begin";
    readonly id: number;
    readonly user: string;
    readonly name: string;
    /** The TCP connection that carries the chunks. */
    readonly connId: number;
  }
  | { readonly type: "upload_chunk"; readonly id: number; readonly data: Uint8Array }
  /** Check size and hash, make the file durable, then call `uploadDone`. */
  | {
    readonly type: "upload_commit";
    readonly id: number;
    readonly size: number;
    readonly sha256: string;
    /** The file's date is no earlier (ms): its owner's registration, dated by another clock maybe. */
    readonly notBefore?: number;
  }
  | { readonly type: "upload_abort"; readonly id: number }
  /** Send `download_ok` then the file's content in `file_chunk` frames to `to`. */
  | {
    readonly type: "download";
    readonly to: Endpoint;
    readonly reqId: number;
    readonly user: string;
    readonly file: StoredFile;
  }
  /** Delete a stored file, then call `fileDeleted(id)`. */
  | { readonly type: "delete_file"; readonly id: number; readonly user: string; name: string }
  /** Delete every file of a deregistered user. */
  | { readonly type: "delete_user_files"; readonly user: string }
  /**
   * Tell the other instances of a file stored or deleted here, or (with an
   * `owner`) remove the record of a file on that instance's disk (shared store only).
   */
  | {
    readonly type: "file_store";
    /** `gone`: the record of another instance's file whose identity was removed (a tombstone). */
    readonly op: "put" | "delete" | "gone";
    readonly user: string;
    readonly file: StoredFile;
    /** The TCP address of the instance whose disk holds it, if not this one. */
    readonly owner?: string;
  }
  /** Close a TCP connection once what was sent on it before is written. */
  | { readonly type: "close"; readonly connId: number };

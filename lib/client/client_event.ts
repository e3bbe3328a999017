/**
 * What the client core reports, as facts: the result of each command and
 * the events that come without one. The words for people are made from
 * them in one place, `client_event_text.ts`.
 *
 * @module
 */
import type { PathChangeReason, PeerPathState } from "./peer_path.ts";
import type { MappingType } from "./address_discovery.ts";
import type { ErrorCodeName } from "../wire/error_code.ts";
import type { PeerState } from "./peer_session.ts";

/** One client in `list` and `lookup` results and in presence news. */
export interface OnlineClient {
  readonly name: string;
  readonly ip: string;
  readonly udpPort: number;
  readonly tcpPort: number;
  readonly onlineMs: number;
}

/** One file stored on the server, as `files` lists it. */
export interface StoredFileInfo {
  readonly name: string;
  readonly size: number;
  /** SHA-256, hex. */
  readonly sha256: string;
  /** ISO 8601. */
  readonly uploadedAt: string;
}

/** One peer session, as `peers` lists it. */
export interface PeerInfo {
  readonly name: string;
  /** The session id. */
  readonly session: string;
  readonly state: PeerState;
  readonly ip: string;
  readonly udpPort: number;
  readonly sent: number;
  readonly received: number;
  /** The path its datagrams take, when the server introduced the sides (see `peer_path.ts`). */
  readonly path?: PeerPathInfo;
}

/**
 * A peer session's path, for `peers` and `--json`: `relay` (through the
 * server), or `direct` with this side's address as the peer sees it
 * (`local`) and the peer's address (`remote`), both `host:port`.
 */
export type PeerPathInfo =
  | { readonly kind: "relay" }
  | { readonly kind: "direct"; readonly local: string; readonly remote: string };

/** How the client reaches the server and who it is: what `status` reports. */
export interface ClientStatus {
  /** The server instance in use, as the user gave it (it changes when the client moves). */
  readonly server: string;
  readonly serverVersion: string | null;
  readonly serverTcpPort: number | null;
  readonly auth: "open" | "password" | null;
  readonly name: string | null;
  readonly loggedIn: boolean;
  readonly watching: boolean;
  readonly udpPort: number;
  readonly tcpPort: number;
  readonly via: "udp" | "tcp";
  /** The public `address:port` of the UDP socket as the server saw it; null until discovered. */
  readonly publicAddress: string | null;
  /** The NAT mapping of the UDP socket (see `address_discovery.ts`); null until discovered. */
  readonly mapping: MappingType | null;
}

/** The facts of a successful command, by command. */
export type CommandSuccess =
  | {
    readonly command: "hello";
    /** The server instance that answered, as the user gave it. */
    readonly server: string;
    readonly serverTcpPort: number;
    readonly serverVersion: string;
    readonly auth: "open" | "password";
    readonly leaseMs: number;
  }
  | ({ readonly command: "status" } & ClientStatus)
  | { readonly command: "logout" | "deregister"; readonly name: string }
  | {
    readonly command: "register";
    readonly name: string;
    /** Set when the identity could not be saved: why. */
    readonly identityProblem?: string;
  }
  | { readonly command: "login"; readonly name: string; readonly replaced: boolean }
  | { readonly command: "tcp" }
  | { readonly command: "list"; readonly clients: readonly OnlineClient[] }
  | { readonly command: "lookup"; readonly client: OnlineClient }
  | { readonly command: "watch"; readonly watching: boolean }
  | {
    readonly command: "files";
    readonly files: readonly StoredFileInfo[];
    readonly usedBytes: number;
    readonly quotaBytes: number;
  }
  | { readonly command: "delete"; readonly name: string }
  | { readonly command: "upload"; readonly name: string; readonly size: number }
  | {
    readonly command: "download";
    readonly name: string;
    readonly size: number;
    readonly sha256: string;
    /** The core's answer: the server is sending, under this request id. */
    readonly reqId?: number;
    /** The driver's answer: where the verified file landed. */
    readonly dest?: string;
  }
  | { readonly command: "connect" | "accept"; readonly name: string; readonly session: string }
  | { readonly command: "reject"; readonly name: string }
  | { readonly command: "send"; readonly to: string; readonly index: number }
  | {
    readonly command: "terminate";
    readonly name: string;
    /** True if the peer acknowledged the end. */
    readonly confirmed: boolean;
    /** How it ended otherwise. */
    readonly reason?: string;
  }
  | { readonly command: "peers"; readonly peers: readonly PeerInfo[] }
  | { readonly command: "transfers"; readonly transfers: readonly TransferInfo[] }
  | {
    readonly command: "sendfile";
    readonly id: number;
    readonly to: string;
    readonly name: string;
    readonly size: number;
  }
  | {
    readonly command: "acceptfile" | "declinefile" | "cancel";
    readonly id: number;
    readonly name: string;
    readonly peer: string;
  }
  | {
    readonly command: "wait";
    readonly for: "messages";
    readonly count: number;
    /** The peer waited on, if one was named. */
    readonly name?: string;
  }
  | {
    readonly command: "wait";
    readonly for: "request" | "terminate";
    readonly name: string;
  }
  | { readonly command: "wait"; readonly for: "offer"; readonly offer: TransferInfo }
  | {
    readonly command: "wait";
    readonly for: "transfers";
    readonly transfers: readonly TransferInfo[];
  }
  | { readonly command: "help" }
  | { readonly command: "generate"; readonly file: string; readonly count: number };

/**
 * Why a command failed: a server error code, or one found by the client
 * itself before or instead of an answer.
 */
export type FailureCode =
  | ErrorCodeName
  | "already_registered"
  | "already_logged_in"
  | "bad_command"
  | "no_name"
  | "no_identity"
  | "no_password"
  | "not_connected"
  | "too_long"
  | "unexpected_reply"
  | "timeout"
  | "connection_failed"
  | "file_error"
  | "rejected"
  | "no_session"
  | "no_request"
  | "peer_gone"
  | "no_transfer"
  | "transfer_failed";

/** A failed command: its code, and one sentence saying what failed and the value. */
export interface CommandFailure {
  readonly ok: false;
  readonly command: string;
  readonly error: string;
  readonly code: FailureCode;
}

/** The outcome of one command: its facts, or why it failed. */
export type CommandResult = ({ readonly ok: true } & CommandSuccess) | CommandFailure;

/** Why the session with the server ended. */
export type SessionEndReason =
  /** Another login of the same name took over. */
  | "replaced"
  /** The server's lease ran out (a partition). */
  | "expired"
  /** The server stopped. */
  | "server_shutdown"
  /** The server no longer knew the session, and logging in again was not possible. */
  | "not_logged_in"
  /** Logged in again, but watching could not be restored. */
  | "watch_failed"
  /** Logging in again was refused or not understood. */
  | "relogin_failed"
  /** The server came back with another static key: refused, nothing more is sent to it. */
  | "server_key_changed"
  | "unknown";

/** Something that happened without a command: presence news, a session's end, a peer's doing. */
export type ClientEvent =
  | { readonly kind: "joined" | "left"; readonly client: OnlineClient }
  | { readonly kind: "resync" }
  /**
   * Logging in again by itself was refused for now (the name is locked out
   * from this address, or the server is busy); it tries again after `retryMs`.
   */
  | {
    readonly kind: "relogin_refused";
    readonly name: string;
    readonly detail: string;
    readonly retryMs: number;
  }
  | {
    readonly kind: "session_ended";
    readonly name: string | undefined;
    readonly reason: SessionEndReason;
    /** The server's own words, when it gave some. */
    readonly detail?: string;
  }
  | { readonly kind: "logged_in_again"; readonly name: string }
  /**
   * The client moved to another instance of the service, its session with
   * it: `silent` when the one in use left a request unanswered, `shutdown`
   * when it said it is shutting down.
   */
  | {
    readonly kind: "server_moved";
    readonly from: string;
    readonly to: string;
    readonly why: "silent" | "shutdown";
    /** The name logged in as, if any. */
    readonly name: string | undefined;
  }
  | {
    readonly kind: "request";
    readonly name: string;
    readonly ip: string;
    readonly udpPort: number;
  }
  | {
    readonly kind: "request_refused";
    readonly name: string;
    readonly ip: string;
    readonly udpPort: number;
    /** The fingerprint of the static key the request was made with. */
    readonly presentedKey?: string;
    /** Where the server has that name and the fingerprint of its key, when the key differs. */
    readonly registered?: {
      readonly name: string;
      readonly ip: string;
      readonly udpPort: number;
      readonly key: string;
    };
    /** The server's error, when the lookup failed. */
    readonly error?: string;
  }
  | {
    readonly kind: "message";
    readonly from: string;
    readonly text: string;
    readonly index: number;
  }
  /** A peer session's path changed: a check found a direct path, or the direct path died. */
  | {
    readonly kind: "peer_path";
    readonly name: string;
    readonly session: string;
    readonly path: PeerPathState;
    readonly why: PathChangeReason;
  }
  | {
    readonly kind: "peer_ended";
    readonly name: string;
    /** `peer` (it ended it), `dead` (it stopped answering), `timeout`, or `replaced`. */
    readonly by: "us" | "peer" | "rejected" | "timeout" | "dead" | "replaced";
    readonly reason: string;
  }
  | TransferEvent;

/** What a peer file transfer reports: its state, and for an offer whether it was taken at once. */
export type TransferEvent =
  | ({ readonly kind: "file_offer"; readonly autoAccept: boolean } & TransferInfo)
  | ({ readonly kind: "file_accepted" | "file_done" | "file_failed" } & TransferInfo)
  | ({
    readonly kind: "file_progress";
    /** Bytes a second. */
    readonly rate: number;
    readonly etaSeconds: number | null;
  } & TransferInfo);

/** Which way a transfer goes. */
export type TransferDirection = "send" | "receive";

/** Where a transfer is. */
export type TransferState =
  /** Offered; the receiver has not answered (or, receiving, the user has not). */
  | "offered"
  /** Accepted; the receiver prepares its file. */
  | "preparing"
  /** Data flows. */
  | "active"
  /** All data is there; the receiver checks the SHA-256. */
  | "verifying"
  /** Received whole and verified. */
  | "done"
  | "declined"
  | "cancelled"
  | "failed"
  /** The session ended first; sending the file again resumes it. */
  | "interrupted";

/** What a transfer looks like from outside. */
export interface TransferInfo {
  /** Local id, for `acceptfile`, `declinefile` and `cancel`. */
  readonly id: number;
  readonly direction: TransferDirection;
  readonly peer: string;
  readonly name: string;
  readonly size: number;
  /** The SHA-256, hex. */
  readonly sha256: string;
  readonly state: TransferState;
  /** Bytes the receiver has (acknowledged ones, when sending). */
  readonly done: number;
  /** Where receiving started (above 0 when resumed). */
  readonly startOffset: number;
  /** Why it ended, when it did not end well. */
  readonly reason?: string;
  /** The local file: the source, or where a received file landed. */
  readonly path?: string;
  /** An interrupted transfer: the later transfer of the same file, with the same peer, that resumed it. */
  readonly resumedBy?: number;
}

/**
 * The client driver's share of server files, in the simulator: what
 * `lib/io/client_driver.ts` does around the client core's `upload` and
 * `download` requests (stream the file's chunks after the request; gather
 * the chunks of a download, check its SHA-256 and place it without
 * overwriting), done on the simulated clients' in-memory files.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import type { CommandResult } from "../client/client_event.ts";
import { toHex } from "../hex.ts";
import { encodeMessage } from "../wire/codec.ts";
import { numberedName } from "../wire/file_name.ts";
import { MAX_CHUNK_BYTES, type Message } from "../wire/messages.ts";
import type { SimClient } from "./sim_client.ts";

interface Download {
  name: string;
  dest: string;
  reqId?: number;
  size?: number;
  sha256?: string;
  chunks: Uint8Array[];
  received: number;
  /** True once the core has reported the server's `download_ok`. */
  started: boolean;
  /** The outcome, once the data is in and the core's result has not yet come. */
  final?: CommandResult;
}

interface State {
  /** The content of the uploads queued, by SHA-256 (hex). */
  uploads: Map<string, Uint8Array>;
  /** The downloads queued, in order. */
  downloads: Download[];
  /** The download under way. */
  download?: Download;
}

/**
 * Uploads and downloads of the simulated clients.
 *
 * @example
 * ```ts
 * const files = new SimServerFiles((client, bytes) => network.sendReliable(now, client.address,
 *   SERVER_TCP, bytes));
 * files.prepareUpload(alice, data); // then run the core's upload command
 * ```
 */
export class SimServerFiles {
  #states = new WeakMap<SimClient, State>();
  #send: (client: SimClient, bytes: Uint8Array) => void;

  /** @param send sends a frame from a client to the server over its TCP connection */
  constructor(send: (client: SimClient, bytes: Uint8Array) => void) {
    this.#send = send;
  }

  /**
   * Remembers the content of an upload of a client, for the `upload`
   * request that names its SHA-256.
   *
   * @param client the client
   * @param data the file's bytes
   */
  prepareUpload(client: SimClient, data: Uint8Array): void {
    this.#state(client).uploads.set(toHex(sha256(data)), data);
  }

  /**
   * Remembers where a download of a client lands, for its `download`
   * request (downloads run in the order they were queued).
   *
   * @param client the client
   * @param name the stored file's name
   * @param dest the path in the client's files
   */
  prepareDownload(client: SimClient, name: string, dest: string): void {
    this.#state(client).downloads.push({ name, dest, chunks: [], received: 0, started: false });
  }

  /**
   * Called after a client sent a request over TCP: streams an upload's
   * chunks behind it, or starts gathering a download.
   *
   * @param client the client
   * @param message the request sent
   */
  sent(client: SimClient, message: Message): void {
    const state = this.#state(client);
    const data = message.type === "upload"
      ? state.uploads.get(toHex(message.sha256))?.subarray(0, message.size)
      : undefined;
    if (message.type === "upload" && data !== undefined) {
      for (let at = 0; at < data.length; at += MAX_CHUNK_BYTES) {
        const chunk = data.subarray(at, Math.min(data.length, at + MAX_CHUNK_BYTES));
        this.#send(
          client,
          encodeMessage({ type: "file_chunk", reqId: message.reqId, data: chunk }),
        );
      }
    }
    const at = message.type === "download"
      ? state.downloads.findIndex((d) => d.name === message.name)
      : -1;
    const download = at === -1 ? undefined : state.downloads.splice(at, 1)[0];
    if (message.type === "download" && download !== undefined) {
      download.reqId = message.reqId;
      state.download = download;
    }
  }

  /**
   * Takes a message the server sent a client over TCP.
   *
   * @param client the client
   * @param message the message
   * @returns true if it was a download's chunk, which the core never sees
   */
  received(client: SimClient, message: Message): boolean {
    const d = this.#state(client).download;
    if (d === undefined || !("reqId" in message) || message.reqId !== d.reqId) return false;
    if (message.type === "download_ok") {
      d.size = message.size;
      d.sha256 = toHex(message.sha256);
      if (d.size === 0) this.#finish(client, d);
      return false;
    }
    if (message.type !== "file_chunk" || d.size === undefined) return false;
    if (d.received + message.data.length > d.size) {
      this.#finish(client, d, "the server sent more data than it announced");
      return true;
    }
    d.chunks.push(message.data.slice());
    d.received += message.data.length;
    if (d.received === d.size) this.#finish(client, d);
    return true;
  }

  /**
   * Filters a result of the client core: the start of a download is held
   * back until its data is in, as the real driver answers only then.
   *
   * @param client the client
   * @param result the core's result
   * @returns the result to report now, if any
   */
  result(client: SimClient, result: CommandResult): CommandResult | undefined {
    const state = this.#state(client);
    const d = state.download;
    if (result.command !== "download" || d === undefined) return result;
    if (!result.ok) {
      state.download = undefined;
      return result;
    }
    d.started = true;
    if (d.final === undefined) return undefined;
    state.download = undefined;
    return d.final;
  }

  /**
   * The server closed the client's TCP connection: a download in progress fails.
   *
   * @param client the client
   */
  closed(client: SimClient): void {
    const d = this.#state(client).download;
    if (d?.reqId !== undefined) this.#finish(client, d, "the TCP connection to the server closed");
  }

  #finish(client: SimClient, d: Download, failure?: string): void {
    const data = concat(d.chunks);
    d.chunks = [];
    let problem = failure;
    const actual = toHex(sha256(data));
    if (problem === undefined && actual !== d.sha256) {
      problem = `the SHA-256 of the data received (${actual.slice(0, 16)}…) does not match ` +
        `the server's (${d.sha256?.slice(0, 16)}…)`;
    }
    let final: CommandResult;
    if (problem !== undefined) {
      final = {
        ok: false,
        command: "download",
        error: `Download of "${d.name}" failed: ${problem}`,
        code: problem.startsWith("the SHA") ? "checksum_mismatch" : "file_error",
      };
    } else {
      const slash = d.dest.lastIndexOf("/");
      const dir = d.dest.slice(0, slash + 1);
      const base = d.dest.slice(slash + 1);
      let dest = d.dest;
      for (let n = 1; client.files.has(dest); n++) dest = dir + numberedName(base, n);
      client.files.set(dest, data);
      final = {
        ok: true,
        command: "download",
        name: d.name,
        dest,
        size: data.length,
        sha256: actual,
      };
    }
    const state = this.#state(client);
    if (d.started) {
      state.download = undefined;
      client.results.push(final);
    } else {
      d.final = final;
    }
  }

  #state(client: SimClient): State {
    let state = this.#states.get(client);
    if (state === undefined) {
      this.#states.set(client, state = { uploads: new Map(), downloads: [] });
    }
    return state;
  }
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

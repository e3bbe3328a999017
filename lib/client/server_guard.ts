/**
 * What stands between the client core and the server on UDP (protocol
 * version 3): learns the server's static key from a clear `hello_ok`,
 * checks it against the pin (`--server-key`, or the key trusted on first
 * use), then runs every other message through a {@link ServerChannel}.
 * Sans-I/O: the driver gives it each message the core sends to the server and
 * each datagram from the server's address, and sends what it returns.
 *
 * Only `hello` and its answers (`hello_ok`, `error`) ever travel in clear, and
 * only answers to a `hello` this guard sent are believed; with a pinned key
 * even `hello` is sealed. A key that differs
 * from the pin turns the `hello_ok` into an `error` for the core (the hello
 * fails with one line) and no channel is made, so nothing is ever sent in
 * clear instead: no downgrade. Messages the core sends before the key is
 * known wait, and the guard asks for the key with a `hello` of its own.
 *
 * A server that restarted with another key drops the sealed datagrams of a
 * running client without a word (it has neither the old keys nor the old
 * static key). So when the core retransmits, or sends its first request
 * after the server said it was shutting down, the guard sends a clear
 * `hello` of its own beside the message (at most once a second), and after
 * a shutdown starts a new handshake at once (a restarted server has lost
 * the old keys, whatever its key): a `hello_ok` with another key refuses the
 * channel, every request in flight fails with the one line that says so,
 * and nothing more is sent.
 *
 * @module
 */
import type { KeyPair } from "../crypto/key_pair.ts";
import { fingerprint } from "../crypto/fingerprint.ts";
import { SECURE_VERSION } from "../crypto/secure_datagram.ts";
import type { Random } from "../random.ts";
import { decodeMessage, encodeMessage } from "../wire/codec.ts";
import { ERROR_CODES } from "../wire/error_code.ts";
import { type Message, SESSION_END_REASONS } from "../wire/messages.ts";
import { ProtocolError } from "../wire/protocol_error.ts";
import { HANDSHAKE_RETRY_MS, MAX_QUEUED_MESSAGES, ServerChannel } from "./server_channel.ts";

/** Options for a {@link ServerGuard}. */
export interface ServerGuardOptions {
  /** This client's static key pair. */
  staticKeyPair: KeyPair;
  /** Ephemeral keys, indexes, the guard's own hello. */
  random: Random;
  /**
   * The server as the user named it first, `host:port`: its key is pinned
   * under this name, and messages name it until the client moves.
   */
  server: string;
  /** The fingerprint the user pinned (`--server-key`), canonical form. */
  expectedFingerprint?: string;
  /** The key trusted on first use earlier, if any. */
  pinnedKey?: Uint8Array;
  /** Where pins are kept, for the message that names it. */
  pinFile?: string;
}

/** What one datagram from the server came to. */
export interface GuardInput {
  /** Messages for the core. */
  readonly messages: Message[];
  /** Datagrams to send to the server now. */
  readonly send: Uint8Array[];
  /** Set when the first handshake with an unpinned key succeeded: pin it now. */
  readonly trustKey?: Uint8Array;
  /** Why the datagram was dropped, if it was. */
  readonly dropped?: string;
  /**
   * Set when this datagram made the guard refuse the server's key while it
   * had a channel (the server came back with another key): one line.
   */
  readonly refused?: string;
}

/** Most requests in flight remembered, to fail them when the key is refused. */
const MAX_IN_FLIGHT = 256;

/** The reqIds of the guard's own `hello`s, far from the core's, which count up from 1. */
const OWN_HELLO_BASE = 0xffff_0000;

/**
 * The client's guard on its server path.
 *
 * @example
 * ```ts
 * const guard = new ServerGuard({ staticKeyPair, random, server: "example.org:3000" });
 * for (const bytes of guard.outgoing(message, now, attempt)) udp.send(bytes, server);
 * const input = guard.incoming(datagram, now);
 * for (const message of input.messages) core.handle(now, message);
 * ```
 */
export class ServerGuard {
  #options: ServerGuardOptions;
  #channel: ServerChannel | undefined;
  #serverKey: Uint8Array | undefined;
  #refusal: string | undefined;
  #clearHellos = new Set<number>();
  #ownHellos = 0;
  #clientId: string;
  #waiting: { bytes: Uint8Array; attempt: number }[] = [];
  #trusted = false;
  /** The reqId of the core's last `hello`, when it went sealed. */
  #sealedHello: number | undefined;
  /** Requests sent through the channel and not yet answered, by reqId. */
  #inFlight = new Set<number>();
  /** When the last clear `hello` went beside a retransmission (to check the key). */
  #lastProbeAt = -Infinity;
  /** True after the server said it was shutting down: the next request checks its key. */
  #restarting = false;
  /** The instance in use, `host:port`, for messages. */
  #server: string;

  /** @param options keys, randomness and the pin */
  constructor(options: ServerGuardOptions) {
    this.#options = options;
    this.#server = options.server;
    this.#trusted = options.pinnedKey !== undefined || options.expectedFingerprint !== undefined;
    const id = options.random.bytes(8);
    this.#clientId = Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("");
    const pinned = options.pinnedKey;
    if (pinned !== undefined && options.expectedFingerprint !== undefined) {
      if (fingerprint(pinned) !== options.expectedFingerprint) return; // the hello will say so
    }
    if (pinned !== undefined) {
      // The key is known: even `hello` goes sealed, so that nothing is in clear
      // and a flood on the address cannot keep this client from the server.
      this.#serverKey = pinned.slice();
      this.#channel = new ServerChannel({ ...options, serverKey: this.#serverKey });
    }
  }

  /** The server's static key, once learned and accepted. */
  get serverKey(): Uint8Array | undefined {
    return this.#serverKey;
  }

  /** Why the server's key was refused, if it was: one line. */
  get refusal(): string | undefined {
    return this.#refusal;
  }

  /**
   * A new channel to the same server for a TCP connection.
   *
   * @returns the channel
   * @throws {Error} if the server's key is not known (or was refused)
   */
  tcpChannel(): ServerChannel {
    if (this.#serverKey === undefined) {
      throw new Error(this.#refusal ?? "the server's key is not known yet (no hello answered)");
    }
    return new ServerChannel({ ...this.#options, serverKey: this.#serverKey });
  }

  /**
   * Turns a message for the server into the datagrams to send.
   *
   * @param message the message
   * @param now current time, ms
   * @param attempt 1 for the first send, more for retransmissions
   * @returns datagrams to send to the server
   */
  outgoing(message: Message, now: number, attempt: number): Uint8Array[] {
    if (message.type === "hello") {
      if (this.#channel === undefined) {
        this.#clearHellos.add(message.reqId);
        return [encodeMessage(message)];
      }
      // Sealed, with a clear hello of our own beside it: if another key answers
      // it, the user hears that the key changed rather than that nothing came.
      this.#sealedHello = message.reqId;
      return [...this.#channel.send(encodeMessage(message), now, attempt >= 3), this.#ownHello()];
    }
    const bytes = encodeMessage(message);
    if (this.#channel !== undefined) {
      const restarting = this.#restarting && "reqId" in message;
      this.#restarting &&= !restarting;
      const out = this.#channel.send(bytes, now, attempt >= 3 || restarting);
      if (!("reqId" in message)) return out;
      this.#inFlight.add(message.reqId);
      if (this.#inFlight.size > MAX_IN_FLIGHT) {
        this.#inFlight.delete(this.#inFlight.values().next().value!);
      }
      if ((attempt >= 2 || restarting) && now - this.#lastProbeAt >= HANDSHAKE_RETRY_MS) {
        // Unanswered: is the server still the one whose key we hold?
        this.#lastProbeAt = now;
        out.push(this.#ownHello());
      }
      return out;
    }
    if (this.#refusal !== undefined) return [];
    this.#waiting.push({ bytes, attempt });
    if (this.#waiting.length > MAX_QUEUED_MESSAGES) this.#waiting.shift();
    // Ask for the key: the core's retransmissions repeat the question.
    return [this.#ownHello()];
  }

  /**
   * Starts a new handshake at once, with the same key: the client moved to
   * another instance of the service (`server_failover.ts`), which holds the
   * same server key but has no channel with this client; what is sent
   * meanwhile waits for it. An instance with another key cannot complete
   * it, so the pin holds across instances.
   *
   * @param now current time, ms
   * @param server the instance now in use, `host:port`, for messages
   * @returns the initiation to send to the new instance, or none before the key is known
   */
  moved(now: number, server: string): Uint8Array[] {
    this.#server = server;
    this.#restarting = false;
    return this.#channel === undefined ? [] : [this.#channel.restart(now)];
  }

  /** A clear `hello` of the guard's own, to learn (or check) the server's key. */
  #ownHello(): Uint8Array {
    const reqId = OWN_HELLO_BASE + (this.#ownHellos++ & 0xffff);
    this.#clearHellos.add(reqId);
    // Only recent hellos are answered; the oldest are forgotten.
    if (this.#clearHellos.size > MAX_IN_FLIGHT) {
      this.#clearHellos.delete(this.#clearHellos.values().next().value!);
    }
    return encodeMessage({ type: "hello", reqId, client: this.#clientId });
  }

  /**
   * Takes a datagram that came from the server's address and port.
   *
   * @param bytes the datagram
   * @param now current time, ms
   * @returns messages for the core and datagrams to send
   */
  incoming(bytes: Uint8Array, now: number): GuardInput {
    if (bytes.length >= 4 && bytes[2] === SECURE_VERSION && (bytes[3] & 0x80) !== 0) {
      return this.#sealed(bytes, now);
    }
    if (bytes.length >= 4 && bytes[2] === 2) return this.#version2(bytes);
    let message: Message;
    try {
      message = decodeMessage(bytes);
    } catch (error) {
      if (error instanceof ProtocolError) return nothing(error.message);
      throw error;
    }
    if (message.type !== "hello_ok" && message.type !== "error") {
      return nothing(`a ${message.type} in clear text`);
    }
    if (!this.#clearHellos.has(message.reqId)) return nothing("an answer to no hello of ours");
    const own = message.reqId >= OWN_HELLO_BASE;
    if (message.type === "error") {
      if (own) return nothing("error");
      // Our hellos are well formed and padded, so a clear bad_request is about
      // a truncated or altered copy someone else sent: believing it would let
      // them end our first contact (the real answer is still on its way).
      if (message.code === ERROR_CODES.bad_request) return nothing("a refusal of an altered copy");
      return { messages: [message], send: [] };
    }
    const connected = this.#channel !== undefined;
    const problem = this.#accept(message.serverKey);
    if (problem !== undefined) {
      const refusal: Message = {
        type: "error",
        reqId: message.reqId,
        code: ERROR_CODES.bad_request,
        message: problem,
      };
      // The core hears it on its own hello, sealed or clear, and on every
      // request in flight: none of them will be answered.
      const coreHello = own ? this.#sealedHello : message.reqId;
      const reqIds = new Set(this.#inFlight);
      this.#inFlight.clear();
      if (coreHello !== undefined) reqIds.add(coreHello);
      const messages = [...reqIds].map((reqId) => ({ ...refusal, reqId }));
      return { messages, send: [], dropped: problem, ...(connected ? { refused: problem } : {}) };
    }
    const send = this.#flush(now);
    return { messages: own ? [] : [message], send };
  }

  #sealed(bytes: Uint8Array, now: number): GuardInput {
    const channel = this.#channel;
    if (channel === undefined) return nothing("no channel yet");
    const input = channel.receive(bytes, now);
    switch (input.kind) {
      case "dropped":
        return nothing(input.reason);
      case "established": {
        const trustKey = this.#trusted ? undefined : this.#serverKey;
        this.#trusted = true;
        return { messages: [], send: input.send, trustKey };
      }
      case "message": {
        if (input.plaintext.length === 0) return nothing("keepalive");
        try {
          const message = decodeMessage(input.plaintext);
          if ("reqId" in message) this.#inFlight.delete(message.reqId);
          if (
            message.type === "session_ended" &&
            message.reason === SESSION_END_REASONS.server_shutdown
          ) {
            this.#restarting = true;
          }
          return { messages: [message], send: [] };
        } catch (error) {
          if (error instanceof ProtocolError) return nothing(error.message);
          throw error;
        }
      }
    }
  }

  /** A version 2 server's answer: the core hears that it cannot be used. */
  #version2(bytes: Uint8Array): GuardInput {
    const copy = bytes.slice();
    copy[2] = 3;
    try {
      const message = decodeMessage(copy);
      if (!("reqId" in message) || !this.#clearHellos.has(message.reqId)) {
        return nothing("version 2");
      }
      return {
        messages: [{
          type: "error",
          reqId: message.reqId,
          code: ERROR_CODES.bad_request,
          message:
            `${this.#server} speaks Switchboard protocol version 2; this client needs version 3`,
        }],
        send: [],
      };
    } catch {
      return nothing("version 2");
    }
  }

  /** Checks a presented key; returns why it is refused, or undefined. */
  #accept(key: Uint8Array): string | undefined {
    if (this.#refusal !== undefined) return this.#refusal;
    const { expectedFingerprint, pinnedKey, pinFile } = this.#options;
    const server = this.#server;
    // The pin is kept under the first instance given; after a move, say so.
    const entry = server === this.#options.server
      ? "its entry"
      : `the entry of ${this.#options.server}`;
    const presented = fingerprint(key);
    const known = pinnedKey ?? this.#serverKey;
    let problem: string | undefined;
    if (key.length !== 32 || key.every((b) => b === 0)) {
      problem = `${server} presented no usable server key`;
    } else if (
      server !== this.#options.server && known !== undefined && !sameKey(known, key) &&
      (expectedFingerprint === undefined || fingerprint(known) === expectedFingerprint)
    ) {
      // Another instance of the service answers with another key: it is
      // misconfigured or an impostor; the service's key has not changed.
      problem =
        `${server}, another instance of ${this.#options.server}, has another key (${presented}, not ${
          fingerprint(known)
        }): refusing it; if the service's key really changed, remove ${entry} from ${
          pinFile ?? "the known-servers file"
        } and start again`;
    } else if (expectedFingerprint !== undefined && presented !== expectedFingerprint) {
      problem =
        `The key of ${server} is ${presented}, not ${expectedFingerprint} as --server-key says: refusing to connect`;
    } else if (pinnedKey !== undefined && !sameKey(pinnedKey, key)) {
      problem = `The key of ${server} has changed (pinned ${
        fingerprint(pinnedKey)
      }, now ${presented}): refusing to connect; if the server's key really changed, remove ${entry} from ${
        pinFile ?? "the known-servers file"
      }`;
    } else if (this.#serverKey !== undefined && !sameKey(this.#serverKey, key)) {
      problem = `The key of ${server} changed while connected (was ${
        fingerprint(this.#serverKey)
      }, now ${presented}): refusing to go on; if the server's key really changed, remove ${entry} from ${
        pinFile ?? "the known-servers file"
      } and start again`;
    }
    if (problem !== undefined) {
      this.#refusal = problem;
      this.#channel = undefined;
      this.#serverKey = undefined;
      this.#waiting = [];
      return problem;
    }
    if (this.#serverKey === undefined) {
      this.#serverKey = key.slice();
      this.#channel = new ServerChannel({ ...this.#options, serverKey: this.#serverKey });
    }
    return undefined;
  }

  #flush(now: number): Uint8Array[] {
    const waiting = this.#waiting;
    this.#waiting = [];
    return waiting.flatMap(({ bytes }) => this.#channel!.send(bytes, now));
  }
}

function nothing(dropped: string): GuardInput {
  return { messages: [], send: [], dropped };
}

function sameKey(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * Accounts, sans-I/O: `register` and `deregister` of open mode's
 * identities (changes held in the commit log until durable; new names per
 * address under `--register-rate`), `login` by the channel's key (open
 * mode) or with a password, under the failed-login limiter (per source
 * address and name), and open mode's identity expiry (`identity_expiry.ts`):
 * when each was last seen, and the removal of those not seen for
 * `expireAfterMs`.
 *
 * An open-mode identity is a key pair on the client: `register` binds the
 * name to the static public key of the encrypted channel it came through,
 * and `login` succeeds when it comes through a channel with that key. The
 * server keeps no secret from which anyone could log in. A version 2 record
 * (the hash of a 16-byte identity key) logs in once more with that key, and
 * is then bound to the channel's key (the login's reply waits until that is
 * durable).
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2";
import { lowerFirstWord } from "../error_line.ts";
import { toHex } from "../hex.ts";
import type { Random } from "../random.ts";
import { nameKey, nameProblem } from "../wire/client_name.ts";
import type { ErrorCodeName } from "../wire/error_code.ts";
import {
  type AUTH_MODES,
  type MessageOf,
  type Reply,
  type Request,
  TOKEN_BYTES,
} from "../wire/messages.ts";
import type { Directory } from "./directory.ts";
import { IdentityExpiry } from "./identity_expiry.ts";
import { type LoginFailure, LoginLimiter } from "./login_limiter.ts";
import type { LoginFailures, LoginRecorded } from "./store.ts";
import { addressKey, RateLimiter } from "./rate_limiter.ts";
import type { Registry, RegistryRecord } from "./registry.ts";
import type { Endpoint, ServerEvent, ServerOutput } from "./server_event.ts";
import type { ServerStorage } from "./server_storage.ts";

/** How logins are checked. */
export type AuthMode = keyof typeof AUTH_MODES;

/** One account of password mode. */
export interface PasswordUser {
  /** The name (display form). */
  readonly name: string;
  /** The encoded password hash (`lib/server/password_hash.ts`). */
  readonly passwordHash: string;
}

/** A change to the registry, to hold until it is durable (the commit log's entry). */
export interface AccountChange {
  /** The reply once durable. */
  readonly reply: Reply;
  /** The event once durable. */
  readonly event: ServerEvent;
  /** Undoes the change in memory, if the write fails. */
  readonly undo: () => void;
  /** Runs once durable. */
  readonly done?: (now: number) => void;
  /** The error message if the write fails. */
  readonly failureText: string;
  /** The error message if the store says another instance registered the name first. */
  readonly takenText?: string;
}

/** What accounts need of the core that holds them. */
export interface AccountsHost {
  /** Answers a request with an error (counted, logged, remembered for replays). */
  refuse(from: Endpoint, request: Request, code: ErrorCodeName, reason: string): void;
  /** Answers a request. */
  answer(from: Endpoint, request: Request, reply: Reply): void;
  /** Holds a change's reply in the commit log until the registry is durable. */
  hold(to: Endpoint, request: Request, fingerprint: string, change: AccountChange): void;
  /** Tells whether a change not yet durable matches. */
  holds(match: (held: { fingerprint: string; event: ServerEvent }) => boolean): boolean;
  /** Asks the driver for work (`verify_password`). */
  output(output: ServerOutput): void;
  /** Logs an event (an identity expired). */
  emit(event: ServerEvent): void;
  /** Notes a registry change no reply waits on (a last-seen date, an expiry): it is saved. */
  changed(): void;
}

/** Options of {@linkcode Accounts}. */
export interface AccountsOptions {
  /** The registry loaded at start. */
  registry: Registry;
  /** Source of session tokens. */
  random: Random;
  /** `open` or `password`. */
  auth: AuthMode;
  /** Password mode's accounts, by name key. */
  users: ReadonlyMap<string, PasswordUser>;
  /** A valid hash of no real password, checked for unknown names. */
  dummyPasswordHash: string;
  /** How long a request is remembered for replays, ms. */
  replayTtlMs: number;
  /** Failed logins from one address that block it for a name. */
  maxAttempts: number;
  /** How long the first block lasts, ms; each later one from the same address doubles. */
  lockoutMs: number;
  /**
   * New names one address may register per minute, over UDP and TCP
   * together (bursts of as many); 0 for no limit.
   */
  registerRatePerMinute: number;
  /**
   * Open mode: an identity not seen (registered, logged in, or kept alive by
   * a session) for this long, ms, is removed with its files; 0 never removes one.
   */
  expireAfterMs: number;
  /** The sessions logins open and deregistrations close. */
  directory: Directory;
  /** The files deregistrations delete. */
  storage: ServerStorage;
  /** Record logins in the shared store (`login_store`), so that instances count failures together. */
  shared: boolean;
}

interface PendingLogin {
  from: Endpoint;
  request: MessageOf<"login">;
  /** When the attempt arrived: a failure counts from then. */
  at: number;
  /** The account's name if it exists. */
  known: string | undefined;
  /** Made with the key pair the name is bound to: the failed-login counts are not its business. */
  proven?: boolean;
}

/**
 * Identities and logins.
 *
 * @example
 * ```ts
 * const accounts = new Accounts(host, { registry, random, auth: "open", ... });
 * accounts.login(now, from, request, fingerprint); // login_ok, login_failed, or a password check
 * ```
 */
export class Accounts {
  #host: AccountsHost;
  #registry: Registry;
  #random: Random;
  #auth: AuthMode;
  #users: ReadonlyMap<string, PasswordUser>;
  #dummyHash: string;
  #replayTtlMs: number;
  #limiter: LoginLimiter;
  #registerLimiter: RateLimiter | undefined;
  #expiry: IdentityExpiry;
  #directory: Directory;
  #storage: ServerStorage;
  #shared: boolean;
  #logins = new Map<number, PendingLogin>();
  /** Failed logins waiting for the shared store to record them, by output id. */
  #recording = new Map<number, PendingLogin>();
  #nextId = 1;

  /**
   * @param host the core's replies, commit log and outputs
   * @param options the registry, secrets, mode and limits
   */
  constructor(host: AccountsHost, options: AccountsOptions) {
    this.#host = host;
    this.#registry = options.registry;
    this.#random = options.random;
    this.#auth = options.auth;
    this.#users = options.users;
    this.#dummyHash = options.dummyPasswordHash;
    this.#replayTtlMs = options.replayTtlMs;
    this.#limiter = new LoginLimiter({
      maxAttempts: options.maxAttempts,
      lockoutMs: options.lockoutMs,
    });
    if (options.registerRatePerMinute > 0) {
      this.#registerLimiter = new RateLimiter({
        ratePerSecond: options.registerRatePerMinute / 60,
        burst: options.registerRatePerMinute,
      });
    }
    this.#expiry = new IdentityExpiry(options.expireAfterMs);
    this.#directory = options.directory;
    this.#storage = options.storage;
    this.#shared = options.shared;
  }

  /**
   * Counts a failed (`ok` false) or successful login another instance saw,
   * so that one source's failures spread over instances block it for the
   * name together.
   *
   * @param now current time, ms
   * @param source the source's address key (`addressKey`)
   * @param key the name key
   * @param ok true for a success (which clears the failures)
   */
  loginElsewhere(now: number, source: string, key: string, ok: boolean): void {
    if (ok) this.#limiter.succeeded(source, key);
    else this.#limiter.failed(now, source, key);
  }

  /**
   * Replaces the failed-login counts of the pairs a shared store holds with
   * its record of them.
   *
   * @param pairs each (source, name key) pair's failures, oldest first
   */
  loginsSynced(pairs: readonly LoginFailures[]): void {
    for (const { source, name, failures } of pairs) this.#limiter.replay(source, name, failures);
  }

  /**
   * Reports that a failed login was recorded in the shared store (or could
   * not be), and answers it: logged in after all if the store binds the name
   * to the login's channel key (this replica lagged: a write whose outcome
   * it never heard, news not yet come), else refused with the pair's count
   * as the store holds it, every instance's failures in it.
   *
   * @param id the `login_store` output's id
   * @param now current time, ms
   * @param recorded what the store made of it; undefined if it could not record it
   */
  loginRecorded(id: number, now: number, recorded?: LoginRecorded): void {
    const pending = this.#recording.get(id);
    if (pending === undefined) return;
    this.#recording.delete(id);
    if (recorded !== undefined && "owner" in recorded) {
      this.#registry.apply([{ op: "put", record: recorded.owner }]);
      const owner = { ...pending, known: recorded.owner.name, proven: true };
      return this.#loginChecked(now, owner, true, "");
    }
    const source = addressKey(pending.from.address);
    const key = nameKey(pending.request.name);
    if (recorded === undefined) {
      // A store that is down costs the count elsewhere, not the answer.
      return this.#refuseFailed(pending, this.#limiter.failed(pending.at, source, key));
    }
    // Counted as if every instance's failures had happened here, this one last.
    const at = recorded.failures.at(-1) ?? pending.at;
    this.#limiter.replay(source, key, recorded.failures.slice(0, -1));
    const block = this.#limiter.check(at, source, key);
    if (block.blocked) {
      return this.#refuseBlocked(pending.from, pending.request, block.retryAfterMs);
    }
    this.#refuseFailed(pending, this.#limiter.failed(at, source, key));
  }

  /** Clears a pair's failed logins here and (shared store) for the other instances. */
  #succeeded(at: number, source: string, key: string): void {
    this.#limiter.succeeded(source, key);
    if (this.#shared) {
      const outcome = { source, name: key, ok: true, at, keepMs: this.#limiter.horizonMs };
      this.#host.output({ type: "login_store", outcome });
    }
  }

  /** `open` or `password`. */
  get auth(): AuthMode {
    return this.#auth;
  }

  /**
   * Replaces password mode's accounts. Sessions already open stay open.
   *
   * @param users the accounts by name key
   */
  setUsers(users: ReadonlyMap<string, PasswordUser>): void {
    this.#users = users;
  }

  /**
   * The display name of an account, in either mode.
   *
   * @param name a name, any case
   * @returns the account's name, or undefined if there is none
   */
  nameOf(name: string): string | undefined {
    return this.#registry.get(name)?.name ?? this.#users.get(nameKey(name))?.name;
  }

  /**
   * Reports the result of a `verify_password` output.
   *
   * @param now current time, ms
   * @param id the output's id
   * @param ok true if the password matched the hash
   */
  passwordChecked(now: number, id: number, ok: boolean): void {
    const pending = this.#logins.get(id);
    if (pending === undefined) return;
    this.#logins.delete(id);
    this.#loginChecked(now, pending, ok && pending.known !== undefined, "");
  }

  /**
   * Runs `register` (open mode): a new identity, held until durable.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param request the request
   * @param fingerprint the request's hash, which names the change
   */
  register(
    now: number,
    from: Endpoint,
    request: MessageOf<"register">,
    fingerprint: string,
  ): void {
    const name = request.name;
    if (this.#auth === "password") {
      return this.#host.refuse(
        from,
        request,
        "not_allowed",
        "This server uses password accounts; ask its operator to add you " +
          "(server.ts user add NAME), then log in",
      );
    }
    const problem = nameProblem(name);
    if (problem !== undefined) {
      return this.#host.refuse(
        from,
        request,
        "invalid_name",
        `Cannot register: ${lowerFirstWord(problem)}`,
      );
    }
    const udpPort = from.transport === "udp" ? from.port : request.udpPort;
    if (udpPort === 0) {
      return this.#host.refuse(
        from,
        request,
        "bad_request",
        `Cannot register "${name}": UDP port 0`,
      );
    }
    if (request.tcpPort < 1024) {
      return this.#host.refuse(
        from,
        request,
        "bad_request",
        `Cannot register "${name}": TCP port ${request.tcpPort} is not in 1024..65535`,
      );
    }
    if (from.clientKey === undefined) {
      return this.#host.refuse(
        from,
        request,
        "bad_request",
        `Cannot register "${name}": it did not come through an encrypted channel`,
      );
    }
    const publicKey = toHex(from.clientKey);
    const existing = this.#registry.get(name);
    if (
      existing !== undefined && existing.registeredBy === fingerprint &&
      existing.publicKey === publicKey &&
      now - Date.parse(existing.registeredAt) <= this.#replayTtlMs &&
      addressKey(existing.ip) === addressKey(from.address)
    ) {
      // This very request was executed just before a crash that lost the
      // replay cache: answer it again, within the replay window only, and
      // only once it is durable.
      if (this.#host.holds((h) => h.fingerprint === fingerprint)) return;
      const token = this.#directory.start(now, from, existing.name, udpPort, request.tcpPort);
      return this.#host.answer(from, request, { type: "register_ok", reqId: request.reqId, token });
    }
    if (existing !== undefined && existing.publicKey === publicKey) {
      // The same key registering its name again: its earlier reply was lost,
      // or said "not saved" while the write went through after all (a Redis
      // that stalled). Not a conflict: it is logged in, as by `login`.
      const pending = this.#host.holds((h) =>
        h.event.kind === "registered" && nameKey(h.event.name) === nameKey(name)
      );
      if (pending) {
        return this.#host.refuse(
          from,
          request,
          "busy",
          `Cannot register "${name}": it is being saved; try again in a moment`,
        );
      }
      this.seen(now, existing.name);
      const token = this.#directory.start(now, from, existing.name, udpPort, request.tcpPort);
      return this.#host.answer(from, request, { type: "register_ok", reqId: request.reqId, token });
    }
    if (existing !== undefined) {
      return this.#host.refuse(
        from,
        request,
        "name_taken",
        `Cannot register "${name}": name is taken`,
      );
    }
    if (this.#registerLimiter?.take(now, from.address).allowed === false) {
      return this.#host.refuse(
        from,
        request,
        "busy",
        `Cannot register "${name}": too many new names from your address ` +
          `(at most ${
            Math.round(this.#registerLimiter.ratePerSecond * 60)
          } a minute); try again later`,
      );
    }
    const record: RegistryRecord = {
      name,
      ip: from.address,
      udpPort,
      tcpPort: request.tcpPort,
      registeredAt: new Date(now).toISOString(),
      publicKey,
      keySha256: "",
      registeredBy: fingerprint,
      lastSeenAt: new Date(now).toISOString(),
    };
    this.#registry.add(record);
    const token = this.#random.bytes(TOKEN_BYTES);
    this.#host.hold(from, request, fingerprint, {
      reply: { type: "register_ok", reqId: request.reqId, token },
      event: {
        kind: "registered",
        name,
        reqId: request.reqId,
        fingerprint,
        ip: record.ip,
        udpPort,
        tcpPort: record.tcpPort,
        transport: from.transport,
      },
      undo: () => this.#registry.remove(name),
      done: (at) => {
        // Files an earlier identity of the name left on this disk are not the new one's.
        this.#storage.removeEarlier(name);
        this.#directory.start(at, from, name, udpPort, request.tcpPort, token);
      },
      failureText: `Cannot register "${name}": the server could not save its registry`,
      takenText: `Cannot register "${name}": name is taken`,
    });
  }

  /**
   * Runs `deregister` (open mode): the identity goes, with its session and
   * files, once durable.
   *
   * @param now current time, ms
   * @param from where it came from
   * @param request the request
   * @param fingerprint the request's hash, which names the change
   */
  deregister(
    now: number,
    from: Endpoint,
    request: MessageOf<"deregister">,
    fingerprint: string,
  ): void {
    const session = this.#directory.session(now, from, request);
    if (session === undefined) return;
    if (this.#auth === "password") {
      return this.#host.refuse(
        from,
        request,
        "not_allowed",
        "This server uses password accounts; only its operator can remove them " +
          "(server.ts user remove NAME)",
      );
    }
    const record = this.#registry.get(session.name);
    if (record === undefined) {
      return this.#host.refuse(
        from,
        request,
        "not_registered",
        `Cannot deregister "${session.name}": not registered`,
      );
    }
    this.#registry.remove(record.name);
    this.#host.hold(from, request, fingerprint, {
      reply: { type: "deregister_ok", reqId: request.reqId },
      event: {
        kind: "deregistered",
        name: record.name,
        reqId: request.reqId,
        fingerprint,
        transport: from.transport,
      },
      undo: () => this.#registry.add(record),
      done: (at) => {
        this.#directory.close(at, session, "deregister");
        this.#storage.removeUser(record.name);
        this.#storage.unlistElsewhere(record.name);
      },
      failureText: `Cannot deregister "${record.name}": the server could not save its registry`,
    });
  }

  /**
   * Runs `login`: the channel's key (open mode; a version 2 record's
   * identity key once, which binds it to the channel's key) or the password
   * (checked by the driver, `verify_password`), under the failed-login
   * limiter.
   *
   * @param now current time, ms
   * @param from where it came from, with its channel's key
   * @param request the request
   * @param fingerprint the request's hash, which names a migration
   */
  login(now: number, from: Endpoint, request: MessageOf<"login">, fingerprint: string): void {
    const key = nameKey(request.name);
    const source = addressKey(from.address);
    // The handshake made with the key a name is bound to proves the owner:
    // others' failures from a shared address (a NAT) never lock it out, and
    // its success does not lift their block.
    const owner = this.#registry.get(request.name)?.publicKey;
    const proven = this.#auth === "open" && owner !== undefined && owner !== "" &&
      from.clientKey !== undefined && sameText(toHex(from.clientKey), owner);
    const block = proven ? undefined : this.#limiter.check(now, source, key);
    if (block?.blocked) return this.#refuseBlocked(from, request, block.retryAfterMs);
    if (this.#auth === "open") {
      const record = this.#registry.get(request.name);
      const channelKey = from.clientKey === undefined ? "" : toHex(from.clientKey);
      const ok = record !== undefined && channelKey !== "" &&
        (record.publicKey !== ""
          ? sameText(channelKey, record.publicKey)
          : record.keySha256 !== "" && request.secret.length === TOKEN_BYTES &&
            sameText(toHex(sha256(request.secret)), record.keySha256)) &&
        !this.#host.holds((h) =>
          (h.event.kind === "registered" || h.event.kind === "identity_bound") &&
          h.event.name === record.name
        );
      const pending = { from, request, known: record?.name, at: now, proven };
      return this.#loginChecked(now, pending, ok, ok ? fingerprint : "");
    }
    if (
      [...this.#logins.values()].some((p) =>
        nameKey(p.request.name) === key && addressKey(p.from.address) === source
      )
    ) {
      // One password check per name and source at a time, so that guesses
      // sent together cannot outrun the lockout (and a guesser elsewhere
      // cannot keep the owner busy).
      return this.#host.refuse(
        from,
        request,
        "busy",
        `A login for "${request.name}" is already being checked; try again in a moment`,
      );
    }
    const user = this.#users.get(key);
    let password: string;
    try {
      password = new TextDecoder("utf-8", { fatal: true }).decode(request.secret);
    } catch {
      password = "";
    }
    const id = this.#nextId++;
    this.#logins.set(id, { from, request, known: user?.name, at: now });
    this.#host.output({
      type: "verify_password",
      id,
      hash: user?.passwordHash ?? this.#dummyHash,
      password,
    });
  }

  /**
   * Answers a checked login; `fingerprint` names the migration of a
   * version 2 record that a successful login brings.
   */
  #loginChecked(now: number, pending: PendingLogin, ok: boolean, fingerprint: string): void {
    const { from, request } = pending;
    const key = nameKey(request.name);
    const source = addressKey(from.address);
    if (!ok || pending.known === undefined) {
      if (!this.#shared) {
        return this.#refuseFailed(pending, this.#limiter.failed(pending.at, source, key));
      }
      // Counted in the shared store first, atomically with the other instances' failures, and
      // answered as it says (`loginRecorded`): a guess sent to another instance after this
      // refusal finds it counted there, and guesses at once on two instances each count the
      // other's.
      const id = this.#nextId++;
      this.#recording.set(id, pending);
      const claim = this.#auth === "open" && from.clientKey !== undefined
        ? { claim: toHex(from.clientKey) }
        : {};
      const outcome = {
        source,
        name: key,
        ok: false,
        at: pending.at,
        keepMs: this.#limiter.horizonMs,
        ...claim,
      };
      return this.#host.output({ type: "login_store", outcome, id });
    }
    if (!pending.proven) this.#succeeded(now, source, key);
    const udpPort = from.transport === "udp" ? from.port : request.udpPort;
    const portProblem = udpPort === 0
      ? "UDP port 0"
      : request.tcpPort < 1024
      ? `TCP port ${request.tcpPort} is not in 1024..65535`
      : undefined;
    if (portProblem !== undefined) {
      return this.#host.refuse(from, request, "bad_request", `Cannot log in: ${portProblem}`);
    }
    const record = this.#auth === "open" ? this.#registry.get(pending.known) : undefined;
    if (record !== undefined && record.publicKey === "" && from.clientKey !== undefined) {
      return this.#bindKey(now, pending, record, from.clientKey, fingerprint);
    }
    this.seen(now, pending.known);
    const replaced = this.#directory.sessions.byName(pending.known) !== undefined;
    const token = this.#directory.start(now, from, pending.known, udpPort, request.tcpPort);
    this.#host.answer(from, request, {
      type: "login_ok",
      reqId: request.reqId,
      token,
      replaced: replaced ? 1 : 0,
    });
  }

  /** Refuses a failed login, saying how many tries are left or how long the block is. */
  #refuseFailed(pending: PendingLogin, after: LoginFailure): void {
    const { from, request } = pending;
    const what = this.#auth === "open" ? "identity key" : "password";
    const tail = after.blocked
      ? `; "${request.name}" is now blocked for ${
        seconds(after.retryAfterMs ?? 0)
      } s from your address`
      : `; ${after.attemptsLeft} ${after.attemptsLeft === 1 ? "attempt" : "attempts"} left`;
    this.#host.refuse(
      from,
      request,
      after.blocked ? "locked_out" : "login_failed",
      `Login failed: wrong name or ${what}${tail}`,
    );
  }

  /** Refuses a login from a source blocked for the name. */
  #refuseBlocked(from: Endpoint, request: MessageOf<"login">, retryAfterMs: number): void {
    this.#host.refuse(
      from,
      request,
      "locked_out",
      `Too many failed logins for "${request.name}" from your address; try again in ${
        seconds(retryAfterMs)
      } s`,
    );
  }

  /**
   * Binds a version 2 record, just logged in to with its identity key, to
   * the channel's key pair: its key hash goes, and the reply waits until
   * that is durable, so that the client forgets the old key only then.
   */
  #bindKey(
    now: number,
    pending: PendingLogin,
    record: RegistryRecord,
    clientKey: Uint8Array,
    fingerprint: string,
  ): void {
    const { from, request } = pending;
    const udpPort = from.transport === "udp" ? from.port : request.udpPort;
    const bound: RegistryRecord = {
      ...record,
      publicKey: toHex(clientKey),
      keySha256: "",
      lastSeenAt: new Date(now).toISOString(),
    };
    this.#registry.replace(bound);
    const token = this.#random.bytes(TOKEN_BYTES);
    const replaced = this.#directory.sessions.byName(record.name) !== undefined ? 1 : 0;
    this.#host.hold(from, request, fingerprint, {
      reply: { type: "login_ok", reqId: request.reqId, token, replaced },
      event: { kind: "identity_bound", name: record.name, reqId: request.reqId },
      undo: () => this.#registry.replace(record),
      done: (at) => this.#directory.start(at, from, record.name, udpPort, request.tcpPort, token),
      failureText: `Cannot log in as "${record.name}": the server could not save its registry`,
    });
  }

  /**
   * Notes that an open-mode identity was seen (logged in, or its session
   * renewed): its `lastSeenAt` is rewritten once it is stale (see
   * `IdentityExpiry`), and saved with no reply waiting on it.
   *
   * @param now current time, ms
   * @param name the identity's name
   */
  seen(now: number, name: string): void {
    if (this.#auth !== "open") return;
    const record = this.#registry.get(name);
    if (record === undefined || !this.#expiry.isStale(now, record)) return;
    this.#registry.replace({ ...record, lastSeenAt: new Date(now).toISOString() });
    this.#host.changed();
  }

  /**
   * Starts the expiry checks at `now` if they have not started (a no-op
   * when expiry is off): the first one is due at once.
   *
   * @param now current time, ms
   */
  startExpiry(now: number): void {
    this.#expiry.start(now);
  }

  /** @returns when `onTimeout` should next be called for expiry, or undefined */
  nextTimeout(): number | undefined {
    return this.#expiry.nextCheck();
  }

  /**
   * Removes, with their files, the identities not seen for `expireAfterMs`
   * (when a check is due; the first call starts the checks).
   *
   * @param now current time, ms
   */
  onTimeout(now: number): void {
    const online = (name: string) => this.#directory.isOnline(name);
    const lapsed = this.#expiry.lapsed(now, this.#registry.records(), online);
    for (const record of lapsed) {
      const lastSeen = record.lastSeenAt ?? record.registeredAt;
      this.#registry.remove(record.name);
      const files = this.#storage.removeUser(record.name, "expired");
      this.#host.emit({ kind: "expired", name: record.name, lastSeen, files });
    }
    if (lapsed.length > 0) this.#host.changed();
  }
}

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

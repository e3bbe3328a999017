/**
 * Who is online: `list` (paged), `lookup`, and `watch`, whose news the
 * server pushes in order; each piece of news is shown once, in order, and
 * acknowledged (again for a copy, so the server stops resending).
 *
 * A watcher that can move to another instance (`--server a,b`) keeps its
 * view of who is online: a `list` when watching starts, then the news. News
 * published while it is moving (its instance died, the next has not yet
 * taken its session over) reaches no instance's watcher list it is on, so
 * when it watches again there it lists again and shows the difference as
 * news.
 *
 * @module
 */
import { nameKey, nameProblem } from "../wire/client_name.ts";
import { type MessageOf, PRESENCE_CHANGES } from "../wire/messages.ts";
import type { OnlineClient } from "./client_event.ts";
import type { Outbox } from "./outbox.ts";
import type { LinkListener, ServerLink } from "./server_link.ts";

/** The commands about presence. */
export type PresenceCommand =
  | { readonly kind: "list" }
  | { readonly kind: "lookup"; readonly name: string }
  | { readonly kind: "watch"; readonly on: boolean };

/**
 * Presence and watch.
 *
 * @example
 * ```ts
 * const presence = new PresenceWatch(link, outbox);
 * presence.run(now, 2, { kind: "watch", on: true });
 * ```
 */
export class PresenceWatch implements LinkListener {
  #link: ServerLink;
  #outbox: Outbox;
  #watching = false;
  #seq = 0;
  /** Who is online as the watcher knows it, by name key; undefined until listed. */
  #view: Map<string, OnlineClient> | undefined;

  /**
   * @param link the server link, for requests and the token
   * @param outbox where results, events and acks go
   */
  constructor(link: ServerLink, outbox: Outbox) {
    this.#link = link;
    this.#outbox = outbox;
    link.listen(this);
  }

  /** True while the server sends presence news. */
  get watching(): boolean {
    return this.#watching;
  }

  /**
   * Runs `list`, `lookup` or `watch`.
   *
   * @param now current time, ms
   * @param id the command's number
   * @param command the command
   */
  run(now: number, id: number, command: PresenceCommand): void {
    const token = this.#link.token;
    if (token === undefined) {
      return this.#outbox.fail(
        id,
        command.kind,
        "Not logged in; use register or login first",
        "not_logged_in",
      );
    }
    switch (command.kind) {
      case "list":
        return this.#list(now, id, token, "", []);
      case "lookup": {
        const problem = nameProblem(command.name);
        if (problem !== undefined) return this.#outbox.fail(id, "lookup", problem, "invalid_name");
        const body = {
          type: "lookup",
          token,
          name: command.name,
          nonce: new Uint8Array(0),
        } as const;
        this.#link.ask(
          now,
          id,
          { command: "lookup", body, via: "udp", expect: "lookup_ok" },
          (_, reply) => {
            this.#outbox.result(id, { ok: true, command: "lookup", client: onlineClient(reply) });
          },
        );
        return;
      }
      case "watch": {
        // A new watcher numbers its news from 1; an existing one goes on.
        if (command.on && !this.#watching) this.#seq = 0;
        const body = { type: "watch", token, on: command.on ? 1 : 0 } as const;
        this.#link.ask(
          now,
          id,
          { command: "watch", body, via: "udp", expect: "watch_ok" },
          (at) => {
            const started = command.on && !this.#watching;
            this.#watching = command.on;
            if (!command.on) this.#view = undefined;
            this.#outbox.result(id, { ok: true, command: "watch", watching: command.on });
            // Only a client that can move to another instance needs the view (see resumed).
            if (started && this.#link.canMove) this.#snapshot(at, false);
          },
        );
        return;
      }
    }
  }

  /**
   * Shows presence news in order, once each, and acknowledges it.
   *
   * @param message the news
   */
  handle(message: MessageOf<"presence">): void {
    const token = this.#link.token;
    if (token === undefined || !this.#link.ownsToken(message.token)) return;
    const resync = message.change === PRESENCE_CHANGES.resync && message.seq > this.#seq;
    if (message.seq === this.#seq + 1 || resync) {
      this.#seq = message.seq;
      if (message.change === PRESENCE_CHANGES.joined) {
        this.#view?.set(nameKey(message.name), onlineClient(message));
        this.#outbox.event({ kind: "joined", client: onlineClient(message) });
      } else if (message.change === PRESENCE_CHANGES.left) {
        this.#view?.delete(nameKey(message.name));
        this.#outbox.event({ kind: "left", client: onlineClient(message) });
      } else {
        this.#outbox.event({ kind: "resync" });
      }
    }
    this.#outbox.push({
      type: "send",
      via: "udp",
      message: { type: "presence_ack", token, seq: this.#seq },
      attempt: 1,
    });
  }

  /** @param resuming true if watching goes on after a new login by itself */
  ended(resuming: boolean): void {
    if (resuming) return;
    this.#watching = false;
    this.#view = undefined;
  }

  /**
   * Logged in again by itself, or moved to another instance: watch again
   * there if it watched.
   *
   * @param now current time, ms
   * @param token the new session's token
   */
  resumed(now: number, token: Uint8Array): void {
    if (!this.#watching) return;
    this.#seq = 0;
    this.#link.request(now, { type: "watch", token, on: 1 }, "udp", (at, outcome) => {
      // What changed while nothing reached it: the difference from a new list.
      if (outcome.type === "reply") {
        if (this.#view !== undefined) this.#snapshot(at, true);
        return;
      }
      this.#watching = false;
      this.#view = undefined;
      this.#outbox.event({
        kind: "session_ended",
        name: this.#link.loggedInAs,
        reason: "watch_failed",
      });
    });
  }

  /**
   * Lists who is online, page by page, as the watcher's view; with `tell`,
   * shows how it differs from the view it had as news (left, then joined).
   * A list that fails leaves the view as it was.
   */
  #snapshot(now: number, tell: boolean, after = "", got: OnlineClient[] = []): void {
    const token = this.#link.token;
    if (token === undefined || !this.#watching) return;
    this.#link.request(now, { type: "list", token, after }, "udp", (at, outcome) => {
      if (outcome.type !== "reply" || outcome.reply.type !== "list_page") return;
      const page = outcome.reply;
      const clients = [...got, ...page.clients.map(onlineClient)];
      if (page.more === 1 && page.clients.length > 0) {
        return this.#snapshot(at, tell, page.clients[page.clients.length - 1].name, clients);
      }
      const fresh = new Map(clients.map((c) => [nameKey(c.name), c]));
      const before = this.#view;
      this.#view = fresh;
      if (!tell || before === undefined || !this.#watching) return;
      for (const [key, client] of before) {
        if (!fresh.has(key)) this.#outbox.event({ kind: "left", client });
      }
      for (const [key, client] of fresh) {
        const known = before.get(key);
        if (known?.ip !== client.ip || known.udpPort !== client.udpPort) {
          this.#outbox.event({ kind: "joined", client });
        }
      }
    });
  }

  #list(now: number, id: number, token: Uint8Array, after: string, got: OnlineClient[]): void {
    const body = { type: "list", token, after } as const;
    this.#link.ask(
      now,
      id,
      { command: "list", body, via: "udp", expect: "list_page" },
      (at, reply) => {
        const clients = [...got, ...reply.clients];
        const more = reply.more === 1 && reply.clients.length > 0 && this.#link.token !== undefined;
        if (!more) return this.#outbox.result(id, { ok: true, command: "list", clients });
        this.#list(
          at,
          id,
          this.#link.token!,
          reply.clients[reply.clients.length - 1].name,
          clients,
        );
      },
    );
  }
}

/**
 * The facts of an online client, from a reply or presence news.
 *
 * @param m a message with a client's name, address and time online
 * @returns the client
 */
export function onlineClient(m: OnlineClient): OnlineClient {
  return { name: m.name, ip: m.ip, udpPort: m.udpPort, tcpPort: m.tcpPort, onlineMs: m.onlineMs };
}
